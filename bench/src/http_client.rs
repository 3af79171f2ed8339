//! A one-request-per-connection HTTP/1.1 client over hyper: enough for
//! seeding servers and forwarding proxy requests on 127.0.0.1.

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::Result;

/// Sends one request to `authority` (`host:port`) and returns the whole response.
pub async fn send(
    authority: &str,
    method: Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response<Bytes>> {
    let stream = TcpStream::connect(authority)
        .await
        .map_err(|e| format!("connect {authority}: {e}"))?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake with {authority}: {e}"))?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut request = Request::builder()
        .method(method)
        .uri(path_and_query)
        .body(Full::new(body))?;
    *request.headers_mut() = headers.clone();
    if !request.headers().contains_key(http::header::HOST) {
        request
            .headers_mut()
            .insert(http::header::HOST, authority.parse()?);
    }
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("{authority}{path_and_query}: {e}"))?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    driver.abort();
    Ok(Response::from_parts(parts, body))
}

/// `send` with a bearer token and a JSON body (or none).
pub async fn call(
    authority: &str,
    method: Method,
    path: &str,
    token: &str,
    json: Option<&serde_json::Value>,
) -> Result<(u16, serde_json::Value)> {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {token}").parse()?,
    );
    let body = match json {
        Some(value) => {
            headers.insert(http::header::CONTENT_TYPE, "application/json".parse()?);
            Bytes::from(serde_json::to_vec(value)?)
        }
        None => Bytes::new(),
    };
    let response = send(authority, method, path, &headers, body).await?;
    let status = response.status().as_u16();
    let value = serde_json::from_slice(response.body()).unwrap_or(serde_json::Value::Null);
    Ok((status, value))
}

/// A keep-alive HTTP/1.1 connection for load drivers: thousands of requests
/// a second on fresh connections would run out of ports (TIME_WAIT).
pub struct Connection {
    authority: String,
    sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

impl Connection {
    pub fn new(authority: &str) -> Connection {
        Connection {
            authority: authority.to_owned(),
            sender: None,
        }
    }

    async fn connect(
        &mut self,
    ) -> Result<&mut hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
        let usable = self.sender.as_ref().is_some_and(|s| !s.is_closed());
        if !usable {
            let stream = TcpStream::connect(&self.authority)
                .await
                .map_err(|e| format!("connect {}: {e}", self.authority))?;
            stream.set_nodelay(true)?;
            let (sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            self.sender = Some(sender);
        }
        self.sender.as_mut().ok_or_else(|| "no connection".into())
    }

    /// One request with a bearer token and an optional JSON body; the
    /// status and the JSON answer.
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        token: &str,
        json: Option<&serde_json::Value>,
    ) -> Result<(u16, serde_json::Value)> {
        let authority = self.authority.clone();
        let sender = self.connect().await?;
        sender.ready().await?;
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, &authority)
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        let body = match json {
            Some(value) => {
                builder = builder.header(http::header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(value)?)
            }
            None => Bytes::new(),
        };
        let response = sender.send_request(builder.body(Full::new(body))?).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        let value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        Ok((status, value))
    }
}

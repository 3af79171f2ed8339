//! Request bodies: content type, size and JSON shape, each problem named by
//! its JSON path. The values are then checked by the domain's validation.

use http::{HeaderMap, header};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::domain::FieldProblem;
use crate::domain::validation::limits;

/// Checks the content type and size, then deserialises, naming the field of
/// any shape error (`products[0].quantity: invalid type ...`).
pub fn parse_json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::invalid(
            "Content-Type",
            format!("must be application/json, got {content_type:?}"),
        ));
    }
    if body.len() > limits::MAX_BODY_BYTES {
        return Err(ApiError::invalid(
            "body",
            format!("must be at most {} bytes", limits::MAX_BODY_BYTES),
        ));
    }
    let deserializer = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        // Broken JSON is a problem of the whole body, wherever the parser stopped.
        let malformed = inner.is_syntax() || inner.is_eof();
        let field = if path == "." || malformed {
            "body".to_owned()
        } else {
            path
        };
        let problem = if malformed {
            format!("malformed JSON: {inner}")
        } else {
            inner.to_string()
        };
        ApiError::Validation(vec![FieldProblem::new(field, problem)])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::validation::CreatePurchaseRequest;
    use http::HeaderValue;
    use serde_json::json;

    fn json_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers
    }

    fn shape_error_field(body: serde_json::Value) -> String {
        let bytes = serde_json::to_vec(&body).unwrap();
        match parse_json_body::<CreatePurchaseRequest>(&json_headers(), &bytes) {
            Err(ApiError::Validation(problems)) => problems[0].field.clone(),
            other => panic!("expected a shape error, got {other:?}"),
        }
    }

    #[test]
    fn unknown_fields_and_wrong_types_name_the_path() {
        assert_eq!(shape_error_field(json!({"discount": 10})), "discount");
        assert_eq!(
            shape_error_field(json!({"products": [{"id": "a", "quantity": "two"}]})),
            "products[0].quantity"
        );
        assert_eq!(
            shape_error_field(json!({"shippingAddress": {"floor": 3}})),
            "shippingAddress.floor"
        );
    }

    #[test]
    fn malformed_json_wrong_content_type_and_oversized_body() {
        let err = parse_json_body::<CreatePurchaseRequest>(&json_headers(), b"{\"customerId\": ")
            .unwrap_err();
        assert!(
            matches!(&err, ApiError::Validation(p) if p[0].problem.starts_with("malformed JSON"))
        );

        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let err = parse_json_body::<CreatePurchaseRequest>(&headers, b"{}").unwrap_err();
        assert!(matches!(&err, ApiError::Validation(p) if p[0].field == "Content-Type"));

        let big = vec![b' '; limits::MAX_BODY_BYTES + 1];
        let err = parse_json_body::<CreatePurchaseRequest>(&json_headers(), &big).unwrap_err();
        assert!(matches!(&err, ApiError::Validation(p) if p[0].field == "body"));
    }
}

//! The purchase orchestrator's common crate, in layers that only point
//! inward (a test in `tests/layout.rs` keeps them so):
//!
//! | layer | folder | depends on |
//! |---|---|---|
//! | domain: the purchase, its lifecycle, rules, pricing, validation | [`domain`] | nothing here |
//! | ports: what the orchestrator needs from outside, as traits | [`ports`] | domain |
//! | service: load → decide → write, shared by API and steps | [`service`] | ports, domain |
//! | adapters: redb, DynamoDB, Step Functions, the AWS SDK's HTTPS client, HTTP providers, simulators | [`adapters`] | ports, domain |
//! | API: the HTTP handlers and their one error mapping | [`api`] | service, auth, ports, domain |
//! | steps: the workflow's tasks | `steps` | service, ports, domain |
//! | auth: JWT verification | `auth` | — |
//! | Lambda glue: runtimes and configuration | [`lambda`] | everything above |
//! | observability: logs and metrics | [`observability`] | domain |
//!
//! # Features: each function links only what it uses
//!
//! A Lambda function's binary size and cold start grow with what it links
//! (issue 14), so everything beyond the core (domain, ports, service,
//! observability, configuration from the environment) is behind a Cargo
//! feature. Each `functions/*/Cargo.toml` enables its own set;
//! `scripts/bench-smoke.sh` fails when one links more than its share.
//!
//! | feature | gates | pulls in | enabled by |
//! |---|---|---|---|
//! | `api` | `api` (all but `api::request`), `auth` | jsonwebtoken, reqwest (JWKS) | API functions (through `lambda-http`), local |
//! | `steps` | `steps`, `adapters::http_payment`, `http_provisioning`, `http_client` | reqwest | step functions, local |
//! | `simulators` | `adapters::simulators` (`PAYMENT_URL=simulator`) | — | step functions (dev stacks), local |
//! | `aws-sdk` | `adapters::aws_sdk`: one HTTPS client with Amazon's roots, credentials | aws-config, aws-smithy-http-client | `dynamodb`, `sfn` |
//! | `dynamodb` | `adapters::dynamodb` | aws-sdk-dynamodb | every AWS function but the console, local (`STORE=dynamodb`) |
//! | `sfn` | `adapters::sfn` | aws-sdk-sfn | every AWS function but the console |
//! | `embedded` | `adapters::embedded` | redb | local only |
//! | `lambda-http` | `lambda::run_endpoint` (implies `api`) | lambda_http | API functions |
//! | `lambda-runtime` | `lambda::run_step` (with `steps`), `lambda::run_reconciler` | lambda_runtime | step functions, the reconciler |
//!
//! The configuration functions in [`lambda::config`] exist when the
//! features they build from do (`lambda_app` needs `api`, `dynamodb` and
//! `sfn`, for instance). The default is every feature, for `cargo test -p
//! shared`; the workspace depends on `shared` without defaults. Cargo
//! unifies features across the packages of one build, so a function is
//! built alone (`-p <function>`) to link only its own set: see
//! `docs/deploy.md` ("Build").

pub mod adapters;
pub mod api;
#[cfg(feature = "api")]
pub mod auth;
pub mod domain;
pub mod lambda;
pub mod observability;
pub mod ports;
pub mod service;
#[cfg(feature = "steps")]
pub mod steps;

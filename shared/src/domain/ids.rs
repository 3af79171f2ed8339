//! Identifiers: a purchase, a customer and a product id are three different
//! things, so they are three types. Each is a string on the wire and in both
//! stores (`#[serde(transparent)]`), so the stored and JSON formats are exactly
//! what they were when ids were plain strings.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(id: impl Into<String>) -> $name {
                $name(id.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> $name {
                $name(id.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> $name {
                $name(id)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

string_id!(
    /// A purchase. New ids are UUIDv7: unique without coordination and sorted
    /// by creation time, which both stores use to list newest first. The id is
    /// also the name of the purchase's first workflow run (later runs are
    /// `<id>-<n>`), so a repeated start of a `STANDARD` workflow never runs
    /// a purchase twice.
    PurchaseId
);

string_id!(
    /// A customer: the `sub` of the caller's token, and the owner of a purchase.
    CustomerId
);

string_id!(
    /// A catalog product.
    ProductId
);

impl PurchaseId {
    /// A fresh UUIDv7 id.
    pub fn generate() -> PurchaseId {
        PurchaseId(uuid::Uuid::now_v7().to_string())
    }
}

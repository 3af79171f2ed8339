//! The API's endpoints: one Lambda function each, and one route each on the
//! local server, both built from this one table.

use super::app::App;
use super::purchases::{
    apply_rules, cancel_purchase, create_purchase, get_purchase, list_purchases, redrive_purchase,
    review_purchase, update_purchase,
};
use super::request::{ApiRequest, ApiResponse};
use super::rule_sets::{
    create_rule_set, delete_rule_set, get_rule_set, list_rule_sets, update_rule_set,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    CreatePurchase,
    ListPurchases,
    GetPurchase,
    UpdatePurchase,
    CancelPurchase,
    ApplyRules,
    ReviewPurchase,
    RedrivePurchase,
    ListRuleSets,
    CreateRuleSet,
    GetRuleSet,
    UpdateRuleSet,
    DeleteRuleSet,
}

/// The path parameters routes carry, by name.
pub const PURCHASE_ID_PARAMETER: &str = "purchaseId";
pub const RULE_SET_NAME_PARAMETER: &str = "ruleSetName";

impl Endpoint {
    pub const ALL: [Endpoint; 13] = [
        Endpoint::CreatePurchase,
        Endpoint::ListPurchases,
        Endpoint::GetPurchase,
        Endpoint::UpdatePurchase,
        Endpoint::CancelPurchase,
        Endpoint::ApplyRules,
        Endpoint::ReviewPurchase,
        Endpoint::RedrivePurchase,
        Endpoint::ListRuleSets,
        Endpoint::CreateRuleSet,
        Endpoint::GetRuleSet,
        Endpoint::UpdateRuleSet,
        Endpoint::DeleteRuleSet,
    ];

    /// The Lambda function's (and its binary's) name.
    pub fn function_name(self) -> &'static str {
        match self {
            Endpoint::CreatePurchase => "create-purchase",
            Endpoint::ListPurchases => "list-purchases",
            Endpoint::GetPurchase => "get-purchase",
            Endpoint::UpdatePurchase => "update-purchase",
            Endpoint::CancelPurchase => "cancel-purchase",
            Endpoint::ApplyRules => "apply-rules",
            Endpoint::ReviewPurchase => "review-purchase",
            Endpoint::RedrivePurchase => "redrive-purchase",
            Endpoint::ListRuleSets => "list-rule-sets",
            Endpoint::CreateRuleSet => "create-rule-set",
            Endpoint::GetRuleSet => "get-rule-set",
            Endpoint::UpdateRuleSet => "update-rule-set",
            Endpoint::DeleteRuleSet => "delete-rule-set",
        }
    }

    /// HTTP method and path below [`BASE_PATH`](super::request::BASE_PATH),
    /// as in `openapi.yaml` and `template.yaml`.
    pub fn route(self) -> (http::Method, &'static str) {
        use http::Method;
        match self {
            Endpoint::CreatePurchase => (Method::POST, "/purchases"),
            Endpoint::ListPurchases => (Method::GET, "/purchases"),
            Endpoint::GetPurchase => (Method::GET, "/purchases/{purchaseId}"),
            Endpoint::UpdatePurchase => (Method::PUT, "/purchases/{purchaseId}"),
            Endpoint::CancelPurchase => (Method::POST, "/purchases/{purchaseId}/cancel"),
            Endpoint::ApplyRules => (Method::POST, "/purchases/{purchaseId}/apply-rules"),
            Endpoint::ReviewPurchase => (Method::POST, "/purchases/{purchaseId}/review"),
            Endpoint::RedrivePurchase => (Method::POST, "/purchases/{purchaseId}/redrive"),
            Endpoint::ListRuleSets => (Method::GET, "/rules"),
            Endpoint::CreateRuleSet => (Method::POST, "/rules"),
            Endpoint::GetRuleSet => (Method::GET, "/rules/{ruleSetName}"),
            Endpoint::UpdateRuleSet => (Method::PUT, "/rules/{ruleSetName}"),
            Endpoint::DeleteRuleSet => (Method::DELETE, "/rules/{ruleSetName}"),
        }
    }

    pub async fn handle(self, app: &App, request: &ApiRequest) -> ApiResponse {
        match self {
            Endpoint::CreatePurchase => create_purchase(app, request).await,
            Endpoint::ListPurchases => list_purchases(app, request).await,
            Endpoint::GetPurchase => get_purchase(app, request).await,
            Endpoint::UpdatePurchase => update_purchase(app, request).await,
            Endpoint::CancelPurchase => cancel_purchase(app, request).await,
            Endpoint::ApplyRules => apply_rules(app, request).await,
            Endpoint::ReviewPurchase => review_purchase(app, request).await,
            Endpoint::RedrivePurchase => redrive_purchase(app, request).await,
            Endpoint::ListRuleSets => list_rule_sets(app, request).await,
            Endpoint::CreateRuleSet => create_rule_set(app, request).await,
            Endpoint::GetRuleSet => get_rule_set(app, request).await,
            Endpoint::UpdateRuleSet => update_rule_set(app, request).await,
            Endpoint::DeleteRuleSet => delete_rule_set(app, request).await,
        }
    }
}

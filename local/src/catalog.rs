//! The product catalog for local mode: a JSON array of products
//! (`CATALOG_FILE`, default: the demo catalog compiled in).

use shared::domain::purchase::Product;

pub const DEMO_CATALOG: &str = include_str!("../../catalog/demo.json");

pub fn load(path: Option<&std::path::Path>) -> Result<Vec<Product>, String> {
    let text = match path {
        Some(path) => {
            std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => DEMO_CATALOG.to_owned(),
    };
    let products: Vec<Product> =
        serde_json::from_str(&text).map_err(|e| format!("invalid catalog: {e}"))?;
    for product in &products {
        if product.id.as_str().trim().is_empty() || product.unit_price < 0 || product.stock < 0 {
            return Err(format!(
                "invalid catalog entry {:?}: blank id, negative price or stock",
                product.id
            ));
        }
    }
    Ok(products)
}

#[cfg(test)]
mod tests {
    #[test]
    fn demo_catalog_is_valid() {
        let products = super::load(None).unwrap();
        assert!(
            products
                .iter()
                .any(|p| p.id.as_str().starts_with("fail-provision"))
        );
        assert!(products.iter().any(|p| p.stock == 1));
    }
}

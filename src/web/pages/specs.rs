//! The specs page (`/specs`): spec files the daemon rejected, with why, newest first.

use askama::Template;
use axum::extract::State;

use super::{AppState, Chrome, PageResult, html};
use crate::web::view;

pub struct RejectedView {
    path: String,
    error: String,
    seen: String,
    seen_exact: String,
}

#[derive(Template)]
#[template(path = "specs.html")]
struct SpecsTemplate {
    chrome: Chrome,
    specs: Vec<RejectedView>,
}

pub(super) async fn specs_page(State(state): State<AppState>) -> PageResult {
    let now = crate::store::now();
    let specs = state
        .store()
        .rejected_specs(500)
        .await?
        .into_iter()
        .map(|(path, error, seen)| RejectedView {
            path,
            error,
            seen: view::ago(now, Some(seen)),
            seen_exact: view::datetime(seen),
        })
        .collect();
    html(&SpecsTemplate { chrome: Chrome::new(&state, "specs"), specs })
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::super::fixture::Fixture;

    #[tokio::test]
    async fn rejected_specs_are_listed_with_why_escaped() {
        let f = Fixture::new().await;
        let page = f.get("/specs").await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.body.contains("<td class=\"mono\">exp/&#60;b&#62;bold&#60;/b&#62;.yaml</td>"), "{}", page.body);
        assert!(page.body.contains("unknown model &#34;&#60;svg onload=alert(3)&#62;&#34;"), "{}", page.body);
        assert!(!page.body.contains("<b>bold") && !page.body.contains("<svg onload"));
    }
}

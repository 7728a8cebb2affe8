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
    let mut specs = Vec::new();
    for (path, error, seen) in state.store().rejected_specs(500).await? {
        // A file deleted since needs no fixing.
        if !tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_file()) {
            continue;
        }
        specs.push(RejectedView {
            path,
            error,
            seen: view::ago(now, Some(seen)),
            seen_exact: view::datetime_utc(seen),
        });
    }
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
        let exp = f.state.daemon.config.experiments.display().to_string();
        let cell = format!("<td class=\"mono\">{exp}/&#60;b&#62;bold&#60;/b&#62;.yaml</td>");
        assert!(page.body.contains(&cell), "{}", page.body);
        assert!(page.body.contains("unknown model &#34;&#60;svg onload=alert(3)&#62;&#34;"), "{}", page.body);
        assert!(!page.body.contains("<b>bold") && !page.body.contains("<svg onload"));
    }

    #[tokio::test]
    async fn a_rejected_spec_whose_file_is_gone_is_not_listed() {
        let f = Fixture::new().await;
        let gone = f.state.daemon.config.experiments.join("gone.yaml").display().to_string();
        f.state.store().reject_spec(&gone, "h2", "field `epochs`: bad").await.unwrap();
        assert!(!f.get("/specs").await.body.contains("gone.yaml"), "the file is gone: nothing to fix");
        std::fs::write(&gone, "epochs: x\n").unwrap();
        assert!(f.get("/specs").await.body.contains("gone.yaml"), "listed while the file is there");
    }
}

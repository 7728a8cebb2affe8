//! The sessions list (`/sessions`): newest first, filtered by dataset and state, paged by keyset; `?fragment=rows`
//! answers only the table's rows, for the live update.

use askama::Template;
use axum::extract::{Query, State};
use serde::Deserialize;

use super::{AppState, Chrome, PageError, PageResult, SessionLine, html, positions_for};
use crate::core::session::SessionState;
use crate::store::dashboard::SessionPageQuery;

/// Sessions per page of the list.
pub const PAGE_SIZE: i64 = 50;

#[derive(Debug, Default, Deserialize)]
pub struct SessionsQuery {
    #[serde(default)]
    dataset: String,
    #[serde(default)]
    state: String,
    before: Option<i64>,
    after: Option<i64>,
    fragment: Option<String>,
}

pub struct StatePill {
    state: &'static str,
    count: i64,
    url: String,
    on: bool,
}

#[derive(Template)]
#[template(path = "sessions.html")]
struct SessionsTemplate {
    chrome: Chrome,
    rows: Vec<SessionLine>,
    total: i64,
    count_all: i64,
    dataset: String,
    state: String,
    datasets: Vec<String>,
    state_pills: Vec<StatePill>,
    all_states_url: String,
    filter_text: String,
    newer_url: Option<String>,
    older_url: Option<String>,
}

#[derive(Template)]
#[template(path = "session_rows.html")]
struct SessionRowsTemplate {
    rows: Vec<SessionLine>,
}

pub(super) fn list_url(dataset: &str, state: &str, cursor: Option<(&str, i64)>) -> String {
    let mut params: Vec<(&str, String)> = Vec::new();
    if !dataset.is_empty() {
        params.push(("dataset", dataset.to_string()));
    }
    if !state.is_empty() {
        params.push(("state", state.to_string()));
    }
    if let Some((k, v)) = cursor {
        params.push((k, v.to_string()));
    }
    let query = serde_urlencoded::to_string(&params).unwrap_or_default();
    if query.is_empty() { "/sessions".into() } else { format!("/sessions?{query}") }
}

pub(super) async fn sessions_page(State(state): State<AppState>, Query(q): Query<SessionsQuery>) -> PageResult {
    let filter_state = match q.state.as_str() {
        "" => None,
        s => Some(s.parse::<SessionState>().map_err(PageError::bad)?),
    };
    let dataset = (!q.dataset.is_empty()).then(|| q.dataset.clone());
    let page = state
        .store()
        .session_page(&SessionPageQuery {
            dataset: dataset.clone(),
            state: filter_state,
            before: q.before,
            after: q.after,
            limit: PAGE_SIZE,
        })
        .await?;
    let positions = positions_for(&state, &page.rows).await?;
    let now = crate::store::now();
    let rows: Vec<SessionLine> = page.rows.iter().map(|r| SessionLine::new(r, &positions, now)).collect();
    if q.fragment.as_deref() == Some("rows") {
        return html(&SessionRowsTemplate { rows });
    }
    let counts = state.store().session_counts().await?;
    let state_pills = counts
        .iter()
        .map(|(s, c)| StatePill {
            state: s.as_str(),
            count: *c,
            url: list_url(&q.dataset, s.as_str(), None),
            on: Some(*s) == filter_state,
        })
        .collect();
    let mut filter = Vec::new();
    if let Some(d) = &dataset {
        filter.push(format!("dataset {d}"));
    }
    if let Some(s) = filter_state {
        filter.push(format!("status {s}"));
    }
    html(&SessionsTemplate {
        chrome: Chrome::new(&state, "sessions"),
        rows,
        total: page.total,
        count_all: counts.iter().map(|c| c.1).sum(),
        datasets: state.store().session_datasets().await?,
        state_pills,
        all_states_url: list_url(&q.dataset, "", None),
        filter_text: filter.join(", "),
        newer_url: page.newer.map(|s| list_url(&q.dataset, &q.state, Some(("after", s)))),
        older_url: page.older.map(|s| list_url(&q.dataset, &q.state, Some(("before", s)))),
        dataset: q.dataset,
        state: q.state,
    })
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::super::fixture::{ESCAPED_MEMO, Fixture, HOSTILE_MEMO};
    use super::*;

    #[tokio::test]
    async fn the_list_shows_every_session_with_its_memo_escaped() {
        let f = Fixture::new().await;
        let page = f.get("/sessions").await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.body.contains(ESCAPED_MEMO) && !page.body.contains(HOSTILE_MEMO), "the memo, escaped");
        for id in [&f.running, &f.queued] {
            assert!(page.body.contains(&format!("<tr data-id=\"{id}\">")), "{id}");
        }
        assert!(page.body.contains("<td>cpu0</td>") && page.body.contains("<td>queue #1</td>"), "where each one is");
        assert!(page.body.contains("<a href=\"/sessions\" class=\"on\">"), "the menu marks the page");
    }

    #[tokio::test]
    async fn filters_narrow_the_list_and_a_bad_state_is_refused() {
        let f = Fixture::new().await;
        let rows = f.get("/sessions?state=queued&fragment=rows").await;
        assert_eq!(rows.status, StatusCode::OK);
        assert!(rows.body.contains(&format!("data-id=\"{}\"", f.queued)), "{}", rows.body);
        assert!(!rows.body.contains(&format!("data-id=\"{}\"", f.running)), "{}", rows.body);
        assert!(!rows.body.contains("<html"), "the fragment is the rows alone");
        let none = f.get("/sessions?dataset=other").await;
        assert!(none.body.contains("No sessions match.") && none.body.contains("dataset other"), "{}", none.body);
        let bad = f.get("/sessions?state=%3Cb%3Ebogus").await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        assert!(bad.body.contains("bogus") && !bad.body.contains("<b>"), "{}", bad.body);
    }

    #[test]
    fn list_urls_keep_the_filter_and_the_cursor() {
        assert_eq!(list_url("", "", None), "/sessions");
        assert_eq!(list_url("my set", "queued", Some(("before", 7))), "/sessions?dataset=my+set&state=queued&before=7");
        assert_eq!(list_url("", "failed", Some(("after", 3))), "/sessions?state=failed&after=3");
    }
}

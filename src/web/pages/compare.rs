//! The compare page (`/compare?s=...`): up to ten sessions side by side, their loss and validation accuracy on
//! shared charts, and the spec fields in which they differ. Opened with no session, it offers the recent ones to
//! pick from.

use askama::Template;
use axum::extract::{RawQuery, State};

use super::{AppState, Chrome, PageResult, SessionLine, html, positions_for, repeated, spec_json, spec_str};
use crate::core::metric::MAX_POINTS;
use crate::core::session::SessionId;
use crate::store::dashboard::SessionPageQuery;
use crate::web::chart::{self, Chart, Series};
use crate::web::view;

#[derive(Template)]
#[template(path = "compare.html")]
struct CompareTemplate {
    chrome: Chrome,
    ids_text: String,
    errors: Vec<String>,
    sessions: Vec<SessionLine>,
    chart_loss: String,
    chart_val: String,
    differing: Vec<(String, Vec<String>)>,
    /// With no session asked: the most recent ones, to pick from.
    recent: Vec<SessionLine>,
}

/// How many recent sessions the picker offers.
const RECENT: i64 = 30;

pub(super) async fn compare_page(State(state): State<AppState>, RawQuery(raw): RawQuery) -> PageResult {
    let wanted = repeated(raw.as_deref(), "s");
    let mut errors = Vec::new();
    let mut ids = Vec::new();
    for w in wanted.iter().take(10) {
        match w.parse::<SessionId>() {
            Ok(id) if !ids.contains(&id) => ids.push(id),
            Ok(_) => {}
            Err(e) => errors.push(e.to_string()),
        }
    }
    if wanted.len() > 10 {
        errors.push(format!("{} sessions asked; the first 10 are compared", wanted.len()));
    }
    let rows = state.store().sessions_by_id(&ids).await?;
    for id in &ids {
        if !rows.iter().any(|r| &r.id == id) {
            errors.push(format!("unknown session {id}"));
        }
    }
    let now = crate::store::now();
    let positions = positions_for(&state, &rows).await?;
    let mut loss = Chart::new("Train loss", "step", "loss");
    let mut val = Chart::new("Validation accuracy", "epoch", "accuracy");
    val.y_range = Some((0.0, 1.0));
    for r in &rows {
        let label = format!("{} {}", r.id, spec_str(&spec_json(r), "model"));
        let key = r.id.to_string();
        let points = state.store().metric_series(&r.id, "loss", false, MAX_POINTS).await?;
        loss.series.push(Series { label: label.clone(), key: key.clone(), points, dashed: false });
        let points = state.store().metric_series(&r.id, "val_acc", true, MAX_POINTS).await?;
        val.series.push(Series { label, key, points, dashed: false });
    }
    let flat: Vec<_> = rows.iter().map(|r| view::flatten(&spec_json(r))).collect();
    let recent = if wanted.is_empty() {
        let page = state.store().session_page(&SessionPageQuery { limit: RECENT, ..Default::default() }).await?;
        let positions = positions_for(&state, &page.rows).await?;
        page.rows.iter().map(|r| SessionLine::new(r, &positions, now)).collect()
    } else {
        Vec::new()
    };
    html(&CompareTemplate {
        chrome: Chrome::new(&state, "compare"),
        ids_text: ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(" "),
        errors,
        sessions: rows.iter().map(|r| SessionLine::new(r, &positions, now)).collect(),
        chart_loss: chart::render(&loss),
        chart_val: chart::render(&val),
        differing: if rows.len() > 1 { view::differing(&flat) } else { Vec::new() },
        recent,
    })
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::super::fixture::{ESCAPED_MEMO, Fixture, HOSTILE_MEMO};

    #[tokio::test]
    async fn compare_shows_the_sessions_and_what_differs_and_names_what_it_cannot_compare() {
        let f = Fixture::new().await;
        let (r, q) = (f.running.to_string(), f.queued.to_string());
        let page = f.get(&format!("/compare?s={r}&ids=tester%2Femoji%2F99%2C{q}+nope&s={r}")).await;
        assert_eq!(page.status, StatusCode::OK);
        for id in [&r, &q] {
            assert!(page.body.contains(&format!("href=\"/sessions/{id}\">{id}</a>")), "{id}");
        }
        assert!(page.body.contains(&format!("value=\"{r} tester/emoji/99 {q}\"")), "each id once, in the order asked");
        assert!(page.body.contains(ESCAPED_MEMO) && !page.body.contains(HOSTILE_MEMO), "the memo, escaped");
        assert!(page.body.contains("<div class=\"card error\">unknown session tester/emoji/99</div>"), "{}", page.body);
        assert_eq!(page.body.matches("<div class=\"card error\">").count(), 2, "the unknown one and `nope`");
        assert!(page.body.contains("<td class=\"mono\">optimizer.lr</td>"), "{}", page.body);
        assert!(page.body.contains("<td class=\"mono\">model</td>") && page.body.contains("resnet18"));

        assert!(!page.body.contains("id=\"compare-pick\""), "sessions asked: no picker");

        let many: Vec<String> = (1..=12).map(|n| format!("s=tester%2Femoji%2F{n}")).collect();
        let page = f.get(&format!("/compare?{}", many.join("&"))).await;
        assert!(page.body.contains("12 sessions asked; the first 10 are compared"), "{}", page.body);
    }

    #[tokio::test]
    async fn compare_with_no_session_offers_the_recent_ones_to_pick() {
        let f = Fixture::new().await;
        let page = f.get("/compare").await;
        assert_eq!(page.status, StatusCode::OK);
        let picker = page.body.split("id=\"compare-pick\"").nth(1).expect("a picker");
        for id in [&f.running, &f.queued] {
            assert!(picker.contains(&format!("<input type=\"checkbox\" name=\"s\" value=\"{id}\"")), "{id}");
        }
        assert!(picker.find(&f.queued.to_string()) < picker.find(&f.running.to_string()), "newest first");
        assert!(picker.contains(ESCAPED_MEMO) && !picker.contains(HOSTILE_MEMO), "memos, escaped");
        assert!(picker.contains("id=\"compare-button\""), "the button the page script enables at two");
    }
}

//! The compare page (`/compare?s=...`): up to ten sessions side by side, their loss and validation accuracy on
//! shared charts, the spec fields in which they differ, and the first two's best checkpoints class by class (which
//! classes one gets that the other misses, from their validation predictions). Opened with no session, it offers the
//! recent ones to pick from.

use askama::Template;
use axum::extract::{RawQuery, State};

use super::{AppState, Chrome, PageResult, SessionLine, html, positions_for, repeated, spec_json, spec_str};
use crate::core::metric::MAX_POINTS;
use crate::core::session::SessionId;
use crate::core::tags::NAME_LANGUAGE;
use crate::store::dashboard::SessionPageQuery;
use crate::web::analysis::label;
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
    /// The first two sessions class by class, or why not.
    delta: Option<DeltaView>,
    delta_note: String,
    /// With no session asked: the most recent ones, to pick from.
    recent: Vec<SessionLine>,
}

/// Two checkpoints class by class.
struct DeltaView {
    a: String,
    b: String,
    accuracy_a: String,
    accuracy_b: String,
    paired: bool,
    a_better: usize,
    b_better: usize,
    shown: usize,
    rows: Vec<DeltaLine>,
}

struct DeltaLine {
    id: u16,
    name: String,
    a: String,
    b: String,
    delta: String,
    /// `delta-pos` (A better), `delta-neg` (B better) or "".
    class: &'static str,
    only_a: String,
    only_b: String,
}

/// Classes the per-class comparison lists (the largest differences).
const DELTA_ROWS: usize = 40;

/// The best checkpoints of `a` and `b` class by class; `Err` says why there is nothing to show.
async fn class_delta(state: &AppState, a: &SessionId, b: &SessionId) -> Result<DeltaView, String> {
    let c = state.daemon.compare_classes((a, "best"), (b, "best")).await.map_err(|e| e.to_string())?;
    let side =
        |s: Option<(usize, f64)>| s.map(|(n, acc)| format!("{} of {n}", view::percent(Some(acc)))).unwrap_or_default();
    let rows: Vec<DeltaLine> = c
        .rows
        .iter()
        .filter(|r| r.delta.is_none_or(|d| d != 0.0) || r.only_a.unwrap_or(0) + r.only_b.unwrap_or(0) > 0)
        .take(DELTA_ROWS)
        .map(|r| DeltaLine {
            id: r.class,
            name: label(&c.tags, r.class, NAME_LANGUAGE),
            a: side(r.a),
            b: side(r.b),
            delta: r.delta.map(|d| format!("{:+.1} pts", d * 100.0)).unwrap_or_default(),
            class: match r.delta {
                Some(d) if d > 0.0 => "delta-pos",
                Some(d) if d < 0.0 => "delta-neg",
                _ => "",
            },
            only_a: r.only_a.map(|n| n.to_string()).unwrap_or_default(),
            only_b: r.only_b.map(|n| n.to_string()).unwrap_or_default(),
        })
        .collect();
    Ok(DeltaView {
        accuracy_a: view::percent(Some(c.accuracy_a)),
        accuracy_b: view::percent(Some(c.accuracy_b)),
        paired: c.paired,
        a_better: c.a_better,
        b_better: c.b_better,
        shown: rows.len(),
        rows,
        a: c.a,
        b: c.b,
    })
}

/// How many recent sessions the picker offers.
const RECENT: i64 = 30;

pub(super) async fn compare_page(
    State(state): State<AppState>,
    caller: crate::core::access::Caller,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let wanted = repeated(raw.as_deref(), "s");
    let mut errors = Vec::new();
    let mut ids = Vec::new();
    for w in wanted.iter().take(10) {
        match w.parse::<SessionId>() {
            Ok(id) if !caller.sees(&id.user) => errors.push(format!("unknown session {id}")),
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
    let present: Vec<&SessionId> = ids.iter().filter(|id| rows.iter().any(|r| &r.id == *id)).collect();
    let (delta, delta_note) = match present[..] {
        [a, b, ..] => match class_delta(&state, a, b).await {
            Ok(d) => (Some(d), String::new()),
            Err(why) => (None, why),
        },
        _ => (None, String::new()),
    };
    let recent = if wanted.is_empty() {
        let page = state
            .store()
            .session_page(&SessionPageQuery { limit: RECENT, user: caller.only(), ..Default::default() })
            .await?;
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
        delta,
        delta_note,
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

#[cfg(test)]
mod delta_tests {
    use axum::http::StatusCode;

    use super::super::fixture::Fixture;

    #[tokio::test]
    async fn compare_shows_which_classes_one_gets_that_the_other_misses() {
        let f = Fixture::new().await;
        // without validation predictions: a note, no error card
        let plain = f.get(&format!("/compare?s={}&s={}", f.running, f.queued)).await;
        assert!(plain.body.contains("id=\"class-delta-note\"") && !plain.body.contains("id=\"class-delta\""));
        let p = f.with_predictions().await;
        let page = f.get(&format!("/compare?s={}&s={}", f.running, f.queued)).await;
        assert_eq!(page.status, StatusCode::OK);
        let card = page.body.split("id=\"class-delta\"").nth(1).unwrap_or_else(|| panic!("{}", page.body));
        // the queued session's checkpoint gets every sticker right; the running one misses every third
        let mut missed: std::collections::BTreeMap<u16, usize> = Default::default();
        for (r, v) in p.dataset.valid.iter().enumerate() {
            if r % 3 == 0 {
                *missed.entry(v.2).or_default() += 1;
            }
        }
        for (class, n) in &missed {
            let row =
                card.split(&format!("<tr data-class=\"{class}\">")).nth(1).unwrap().split("</tr>").next().unwrap();
            assert!(
                row.contains("delta-neg")
                    && row.ends_with(&format!("<td class=\"num\">0</td><td class=\"num\">{n}</td>")),
                "{row}"
            );
        }
        assert!(
            card.contains(&format!("0 classes where the first is more accurate, {} where the second is", missed.len()))
        );
        let api = f.get(&format!("/api/compare/classes?a={}&b={}:1", f.running, f.queued)).await;
        let json: serde_json::Value = serde_json::from_str(&api.body).unwrap();
        assert_eq!((json["paired"].as_bool(), json["b_better"].as_u64()), (Some(true), Some(missed.len() as u64)));
        let refused = f.get(&format!("/api/compare/classes?a={}:9&b={}", f.running, f.queued)).await;
        assert_eq!(refused.status, StatusCode::NOT_FOUND);
    }
}

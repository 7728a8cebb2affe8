//! The sessions list (`/sessions`): newest first, filtered by dataset and state, paged by keyset; `?fragment=rows`
//! answers only the table's rows, for the live update. The hyperparameter columns are the user's choice (`col=lr&col=
//! batch`, model alone by default); the points of a sweep are grouped under their spec file, the best on top; every
//! column sorts in the page (`static/rush.js`), a sweep's points staying together.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Query, RawQuery, State};
use serde::Deserialize;

use super::{
    AppState, Chrome, PageError, PageResult, SessionLine, SweepHead, activity_of, html, positions_for, repeated,
    spec_json,
};
use crate::core::session::SessionState;
use crate::store::dashboard::SessionPageQuery;

/// Sessions per page of the list.
pub const PAGE_SIZE: i64 = 50;

/// The hyperparameter columns the table offers: (`col` key, header, dotted spec field, how it sorts).
pub const COLUMNS: [(&str, &str, &str, &str); 11] = [
    ("model", "Model", "model", "text"),
    ("image_size", "Image size", "image_size", "num"),
    ("lr", "LR", "optimizer.lr", "num"),
    ("batch", "Batch", "batch_size", "num"),
    ("epochs", "Epochs", "epochs", "num"),
    ("optimizer", "Optimizer", "optimizer.name", "text"),
    ("weight_decay", "Weight decay", "optimizer.weight_decay", "num"),
    ("schedule", "Schedule", "schedule.name", "text"),
    ("loss", "Loss", "loss.name", "text"),
    ("precision", "Precision", "precision", "text"),
    ("seed", "Seed", "seed", "num"),
];

/// The columns shown by default.
const DEFAULT_COLUMNS: [&str; 1] = ["model"];

/// The `col` keys asked for that the table knows, in the table's order; the default when none is.
fn chosen_columns(asked: &[String]) -> Vec<&'static str> {
    let chosen: Vec<&'static str> = COLUMNS.iter().map(|c| c.0).filter(|key| asked.iter().any(|a| a == key)).collect();
    if chosen.is_empty() { DEFAULT_COLUMNS.to_vec() } else { chosen }
}

/// A column the user may show.
pub struct ColumnChoice {
    key: &'static str,
    label: &'static str,
    on: bool,
}

/// Orders a page's rows (newest first) so that the points of each sweep come together where its newest point was,
/// the best (highest `best`) first; `sweep` names the sweep a row is a point of. Other rows keep their place.
pub fn group_sweeps<T>(rows: Vec<T>, sweep: impl Fn(&T) -> Option<i64>, best: impl Fn(&T) -> Option<f64>) -> Vec<T> {
    let mut groups: Vec<(Option<i64>, Vec<T>)> = Vec::new();
    for row in rows {
        match sweep(&row) {
            Some(key) => match groups.iter_mut().find(|(k, _)| *k == Some(key)) {
                Some((_, members)) => members.push(row),
                None => groups.push((Some(key), vec![row])),
            },
            None => groups.push((None, vec![row])),
        }
    }
    groups
        .into_iter()
        .flat_map(|(_, mut members)| {
            // Stable: equal (or missing) accuracies keep the newest first.
            members.sort_by(|a, b| match (best(a), best(b)) {
                (Some(x), Some(y)) => y.total_cmp(&x),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            });
            members
        })
        .collect()
}

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
    /// The hyperparameter columns shown: their headers and how each sorts, and every choice.
    headers: Vec<(&'static str, &'static str)>,
    columns: Vec<ColumnChoice>,
    /// The `col` values, for the filter form to keep.
    cols: Vec<&'static str>,
    ncols: usize,
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
    ncols: usize,
}

pub(super) fn list_url(dataset: &str, state: &str, cursor: Option<(&str, i64)>) -> String {
    list_url_with(dataset, state, &[], cursor)
}

/// [`list_url`] keeping the chosen columns (`cols`; the default ones are left out of the URL).
pub(super) fn list_url_with(dataset: &str, state: &str, cols: &[&str], cursor: Option<(&str, i64)>) -> String {
    let mut params: Vec<(&str, String)> = Vec::new();
    if !dataset.is_empty() {
        params.push(("dataset", dataset.to_string()));
    }
    if !state.is_empty() {
        params.push(("state", state.to_string()));
    }
    if cols != DEFAULT_COLUMNS {
        params.extend(cols.iter().map(|c| ("col", c.to_string())));
    }
    if let Some((k, v)) = cursor {
        params.push((k, v.to_string()));
    }
    let query = serde_urlencoded::to_string(&params).unwrap_or_default();
    if query.is_empty() { "/sessions".into() } else { format!("/sessions?{query}") }
}

/// The table's lines for `rows`: the chosen columns filled in, each sweep's points together under their spec, the best
/// first (see [`group_sweeps`]).
async fn table_lines(
    state: &AppState,
    rows: &[crate::store::SessionRow],
    cols: &[&str],
    now: f64,
) -> Result<Vec<SessionLine>, PageError> {
    let positions = positions_for(state, rows).await?;
    let mut spec_ids: Vec<i64> = rows.iter().filter_map(|r| r.spec_id).collect();
    spec_ids.sort_unstable();
    spec_ids.dedup();
    let specs = state.store().spec_sessions(&spec_ids).await?;
    let sweep_of = |r: &crate::store::SessionRow| r.spec_id.filter(|id| specs.get(id).is_some_and(|(_, n)| *n > 1));
    let grouped = group_sweeps(rows.iter().collect(), |r| sweep_of(r), |r| r.best_val_acc);
    let mut shown: HashMap<i64, usize> = HashMap::new();
    for r in &grouped {
        if let Some(id) = sweep_of(r) {
            *shown.entry(id).or_default() += 1;
        }
    }
    let mut headed = std::collections::HashSet::new();
    Ok(grouped
        .into_iter()
        .map(|r| {
            let mut line = SessionLine::new(r, &positions, now);
            line.activity = activity_of(state, r);
            let flat = super::view::flatten(&spec_json(r));
            line.params = cols
                .iter()
                .map(|key| {
                    let field = COLUMNS.iter().find(|c| c.0 == *key).map_or("", |c| c.2);
                    flat.get(field).cloned().unwrap_or_default()
                })
                .collect();
            if let Some(id) = sweep_of(r) {
                line.group = format!("sweep-{id}");
                // Grouped best first: the first row of a sweep is its best point.
                if headed.insert(id) {
                    let (path, points) = specs.get(&id).cloned().unwrap_or_default();
                    let name = std::path::Path::new(&path)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| path.clone());
                    line.sweep = Some(SweepHead {
                        name,
                        path,
                        points,
                        shown: shown.get(&id).copied().unwrap_or(0),
                        best: line.best.clone(),
                    });
                }
            }
            line
        })
        .collect())
}

pub(super) async fn sessions_page(
    State(state): State<AppState>,
    caller: crate::core::access::Caller,
    Query(q): Query<SessionsQuery>,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let asked: Vec<String> = repeated(raw.as_deref(), "col").into_iter().filter(|c| !c.contains('/')).collect();
    let cols = chosen_columns(&asked);
    let ncols = 9 + cols.len();
    let filter_state = match q.state.as_str() {
        "" => None,
        s => Some(s.parse::<SessionState>().map_err(PageError::bad)?),
    };
    let dataset = (!q.dataset.is_empty()).then(|| q.dataset.clone());
    let page = state
        .store()
        .session_page(&SessionPageQuery {
            dataset: dataset.clone(),
            user: caller.only(),
            state: filter_state,
            before: q.before,
            after: q.after,
            limit: PAGE_SIZE,
        })
        .await?;
    let now = crate::store::now();
    let rows = table_lines(&state, &page.rows, &cols, now).await?;
    if q.fragment.as_deref() == Some("rows") {
        return html(&SessionRowsTemplate { rows, ncols });
    }
    let counts = state.store().session_counts().await?;
    let state_pills = counts
        .iter()
        .map(|(s, c)| StatePill {
            state: s.as_str(),
            count: *c,
            url: list_url_with(&q.dataset, s.as_str(), &cols, None),
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
        headers: cols.iter().filter_map(|k| COLUMNS.iter().find(|c| c.0 == *k).map(|c| (c.1, c.3))).collect(),
        columns: COLUMNS.iter().map(|c| ColumnChoice { key: c.0, label: c.1, on: cols.contains(&c.0) }).collect(),
        ncols,
        total: page.total,
        count_all: counts.iter().map(|c| c.1).sum(),
        datasets: state.store().session_datasets().await?,
        state_pills,
        all_states_url: list_url_with(&q.dataset, "", &cols, None),
        filter_text: filter.join(", "),
        newer_url: page.newer.map(|s| list_url_with(&q.dataset, &q.state, &cols, Some(("after", s)))),
        older_url: page.older.map(|s| list_url_with(&q.dataset, &q.state, &cols, Some(("before", s)))),
        cols,
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
    fn a_sweep_s_points_come_together_where_its_newest_was_the_best_first() {
        // (name, sweep, best), newest first as the page reads them.
        let rows = vec![
            ("a", Some(1), Some(0.5)),
            ("x", None, Some(0.9)),
            ("b", Some(1), None),
            ("c", Some(1), Some(0.7)),
            ("y", None, None),
            ("p", Some(2), Some(0.1)),
        ];
        let order: Vec<&str> = group_sweeps(rows, |r| r.1, |r| r.2).into_iter().map(|r| r.0).collect();
        assert_eq!(order, ["c", "a", "b", "x", "y", "p"]);
    }

    #[test]
    fn the_columns_are_the_known_ones_asked_for_else_the_model() {
        assert_eq!(chosen_columns(&[]), ["model"]);
        assert_eq!(chosen_columns(&["batch".into(), "nope".into(), "lr".into()]), ["lr", "batch"]);
        assert_eq!(list_url_with("", "", &["lr", "batch"], None), "/sessions?col=lr&col=batch");
        assert_eq!(list_url_with("", "queued", &["model"], None), "/sessions?state=queued");
    }

    #[tokio::test]
    async fn chosen_hyperparameter_columns_show_each_session_s_values_and_sort_keys() {
        let f = Fixture::new().await;
        let page = f.get("/sessions?col=lr&col=batch&col=model").await;
        assert_eq!(page.status, StatusCode::OK);
        let head = page.body.split("<thead>").nth(1).and_then(|h| h.split("</thead>").next()).unwrap_or("");
        let order: Vec<usize> =
            ["Model", "LR", "Batch"].iter().map(|h| head.find(&format!(">{h}</th>")).unwrap_or(0)).collect();
        assert!(order[0] > 0 && order[0] < order[1] && order[1] < order[2], "the table's order: {head}");
        assert!(head.contains("data-sort=\"num\">LR</th>"), "sortable: {head}");
        let row = page.body.split(&format!("<tr data-id=\"{}\">", f.queued)).nth(1).unwrap_or("");
        let row = row.split("</tr>").next().unwrap_or("");
        assert!(row.contains(">0.01</td>") && row.contains(">resnet18</td>"), "{row}");
        assert!(page.body.contains("name=\"col\" value=\"lr\" checked"), "the choice is kept in the form");
        assert!(
            page.body.contains("/sessions?state=queued&#38;col=model&#38;col=lr&#38;col=batch"),
            "the filters keep it"
        );
    }

    #[tokio::test]
    async fn a_sweep_is_grouped_under_its_spec_with_the_best_point_first() {
        let f = Fixture::new().await;
        let store = f.state.store();
        let new = crate::store::NewSession {
            user: "tester".into(),
            dataset: "emoji".into(),
            memo: "point".into(),
            priority: 0,
            device: crate::core::queue::Device::Cpu,
            epochs: 5,
            fork_of: None,
        };
        let ids = store.enqueue(Some(("/exp/grid.yaml", "h9")), &vec![new; 3], |_, _| "{}".into()).await.unwrap();
        for (id, acc) in ids.iter().zip([0.2, 0.9, 0.5]) {
            store.transition(id, SessionState::Running, Some("cpu0"), None).await.unwrap();
            store.set_progress(id, 1, acc).await.unwrap();
        }
        let page = f.get("/sessions").await;
        let head = page.body.find("<tr class=\"sweep-head\"").expect("a sweep header");
        let at = |id: &crate::core::session::SessionId| page.body.find(&format!("data-id=\"{id}\"")).unwrap();
        assert!(head < at(&ids[1]) && at(&ids[1]) < at(&ids[2]) && at(&ids[2]) < at(&ids[0]), "best first");
        assert!(
            page.body[head..at(&ids[1])].contains("grid.yaml") && page.body[head..at(&ids[1])].contains("3 points")
        );
        assert!(page.body.contains("data-group=\"sweep-"), "its points carry the group for sorting");
    }

    #[test]
    fn list_urls_keep_the_filter_and_the_cursor() {
        assert_eq!(list_url("", "", None), "/sessions");
        assert_eq!(list_url("my set", "queued", Some(("before", 7))), "/sessions?dataset=my+set&state=queued&before=7");
        assert_eq!(list_url("", "failed", Some(("after", 3))), "/sessions?state=failed&after=3");
    }
}

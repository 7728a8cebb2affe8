//! The datasets page (`/datasets`): each registered dataset's sizes, with links to its page (classes, packages,
//! stickers), its sessions and its board; a dataset still registering says so, and one whose registration failed says
//! why.

use askama::Template;
use axum::extract::State;

use super::sessions::list_url;
use super::{AppState, Chrome, PageResult, html};
use crate::daemon::{DatasetStatus, Registration};
use crate::web::view;

pub struct DatasetView {
    name: String,
    /// `registered`, `registering` or `failed`.
    state: &'static str,
    /// Why its registration failed.
    error: String,
    train: i64,
    classes: i64,
    test: i64,
    registered: String,
    registered_exact: String,
    sessions_url: String,
    board_url: String,
    /// The dataset's page: its classes, packages and stickers.
    page_url: String,
}

#[derive(Template)]
#[template(path = "datasets.html")]
struct DatasetsTemplate {
    chrome: Chrome,
    datasets: Vec<DatasetView>,
}

pub(super) async fn datasets_page(State(state): State<AppState>) -> PageResult {
    let now = crate::store::now();
    let datasets = state.daemon.dataset_statuses().await?.into_iter().map(|d| dataset_line(d, now)).collect();
    html(&DatasetsTemplate { chrome: Chrome::new(&state, "datasets"), datasets })
}

fn dataset_line(d: DatasetStatus, now: f64) -> DatasetView {
    let (state, error, since) = match (&d.row, d.registration) {
        (Some(_), _) | (None, None) => ("registered", String::new(), None),
        (None, Some(Registration::Registering { since })) => ("registering", String::new(), Some(since)),
        (None, Some(Registration::Failed { error })) => ("failed", error, None),
    };
    let at = d.row.as_ref().map(|r| r.registered_at).or(since);
    DatasetView {
        sessions_url: list_url(&d.name, "", None),
        board_url: format!("/datasets/{}/board", d.name),
        page_url: format!("/datasets/{}", d.name),
        state,
        error,
        train: d.row.as_ref().map_or(0, |r| r.train_images),
        classes: d.row.as_ref().map_or(0, |r| r.classes),
        test: d.row.as_ref().map_or(0, |r| r.test_images),
        registered: at.map(|t| view::ago(now, Some(t))).unwrap_or_default(),
        registered_exact: at.map(view::datetime_utc).unwrap_or_default(),
        name: d.name,
    }
}

#[cfg(test)]
mod tests {
    use askama::Template;
    use axum::http::StatusCode;

    use super::*;

    use super::super::fixture::Fixture;

    #[tokio::test]
    async fn each_dataset_shows_its_sizes_and_links_its_sessions_and_board() {
        let f = Fixture::new().await;
        let page = f.get("/datasets").await;
        assert_eq!(page.status, StatusCode::OK);
        let row = page.body.split("<td class=\"mono\">emoji</td>").nth(1).unwrap().split("</tr>").next().unwrap();
        assert!(
            row.starts_with("<td class=\"num\">300</td><td class=\"num\">8</td><td class=\"num\">60</td>"),
            "{row}"
        );
        assert!(row.contains("href=\"/sessions?dataset=emoji\">sessions</a>"), "{row}");
        assert!(row.contains("href=\"/datasets/emoji/board\">board</a>"), "{row}");
    }

    #[test]
    fn a_dataset_still_registering_says_so_and_a_failed_one_says_why() {
        let registering = DatasetStatus {
            name: "big".into(),
            row: None,
            registration: Some(Registration::Registering { since: 90.0 }),
        };
        let shown = dataset_line(registering, 100.0);
        assert_eq!((shown.state, shown.registered.as_str()), ("registering", "10 s ago"));
        let failed = DatasetStatus {
            name: "bad".into(),
            row: None,
            registration: Some(Registration::Failed { error: "no column tags".into() }),
        };
        let page = DatasetsTemplate {
            chrome: Chrome { nav: "datasets", user: "u".into(), addr: "a".into(), logout: false },
            datasets: vec![dataset_line(failed, 100.0), shown],
        }
        .render()
        .unwrap();
        let row = |name: &str| {
            page.split(&format!("<td class=\"mono\">{name}</td>"))
                .nth(1)
                .unwrap()
                .split("</tr>")
                .next()
                .unwrap()
                .to_string()
        };
        assert!(row("big").contains("registering") && !row("big").contains("board"), "{page}");
        assert!(row("bad").contains("failed: no column tags") && !row("bad").contains("board"), "{page}");
    }
}

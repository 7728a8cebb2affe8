//! The datasets page (`/datasets`): each registered dataset's sizes, with links to its page (classes, packages,
//! stickers), its sessions and its board.

use askama::Template;
use axum::extract::State;

use super::sessions::list_url;
use super::{AppState, Chrome, PageResult, html};
use crate::web::view;

pub struct DatasetView {
    name: String,
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
    let datasets = state
        .store()
        .datasets()
        .await?
        .into_iter()
        .map(|d| DatasetView {
            sessions_url: list_url(&d.name, "", None),
            board_url: format!("/datasets/{}/board", d.name),
            page_url: format!("/datasets/{}", d.name),
            train: d.train_images,
            classes: d.classes,
            test: d.test_images,
            registered: view::ago(now, Some(d.registered_at)),
            registered_exact: view::datetime_utc(d.registered_at),
            name: d.name,
        })
        .collect();
    html(&DatasetsTemplate { chrome: Chrome::new(&state, "datasets"), datasets })
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

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
}

//! What a checkpoint gets wrong (`/sessions/{id}/analysis?checkpoint=best`): for any kept checkpoint, from the
//! validation predictions saved with it, the per-class table (accuracy, support, the most frequent wrong prediction;
//! sortable by any column, tags named in a language of `tag.tsv`), the most confused (true, predicted) pairs and the
//! accuracy of each package (art style); and the gallery (`/sessions/{id}/gallery?class=C` or `?truth=T&predicted=P`)
//! of the validation stickers involved, with the true tag and the top predictions, wrong ones first. No script: the
//! sort and language links are plain links.

use askama::Template;
use axum::extract::{Path, Query, State};
use serde::Deserialize;

use super::dataset::{LanguageLink, image_url, language, language_links, query};
use super::{AppState, Chrome, PageError, PageResult, html, session_id, session_url};
use crate::core::analysis::{ClassColumn, Selection, sort_classes};
use crate::core::tags::TagText;
use crate::store::CheckpointRow;
use crate::web::analysis::{self as api, GALLERY_LIMIT, GALLERY_MAX, NO_PREDICTIONS, label};
use crate::web::view;

#[derive(Debug, Default, Deserialize)]
pub struct AnalysisQuery {
    checkpoint: Option<String>,
    lang: Option<String>,
    sort: Option<String>,
    dir: Option<String>,
}

/// A checkpoint to pick: (name, URL, shown now).
type CheckpointLink = (String, String, bool);

/// A sortable column's header.
struct Column {
    key: &'static str,
    title: &'static str,
    url: String,
    /// "▲", "▼" or "".
    arrow: &'static str,
    num: bool,
}

struct ClassLine {
    id: u16,
    name: String,
    keywords: String,
    url: String,
    support: usize,
    correct: usize,
    accuracy: String,
    accuracy_value: String,
    percent: u32,
    predicted: usize,
    /// (name, id, count, gallery URL of the pair).
    wrong: Option<(String, u16, usize, String)>,
}

struct ConfusionLine {
    truth: (u16, String),
    predicted: (u16, String),
    count: usize,
    url: String,
}

struct PackageLine {
    package: String,
    style: String,
    support: usize,
    correct: usize,
    accuracy: String,
    percent: u32,
}

#[derive(Template)]
#[template(path = "analysis.html")]
struct AnalysisTemplate {
    chrome: Chrome,
    id: String,
    session_url: String,
    checkpoints: Vec<CheckpointLink>,
    languages: Vec<LanguageLink>,
    /// The checkpoint has no validation predictions.
    notice: Option<String>,
    epoch: String,
    source: String,
    rows: usize,
    accuracy: String,
    columns: Vec<Column>,
    classes: Vec<ClassLine>,
    confusions: Vec<ConfusionLine>,
    packages: Vec<PackageLine>,
}

/// The checkpoints a view offers: `best`, `last`, then each kept one, newest first.
fn checkpoint_links(rows: &[CheckpointRow], shown: &str, url: impl Fn(&str) -> String) -> Vec<CheckpointLink> {
    if rows.is_empty() {
        return Vec::new();
    }
    let mut names = vec!["best".to_string(), "last".to_string()];
    let mut epochs: Vec<i64> = rows.iter().map(|r| r.epoch).collect();
    epochs.sort_unstable_by(|a, b| b.cmp(a));
    names.extend(epochs.iter().map(i64::to_string));
    names.into_iter().map(|n| (n.clone(), url(&n), n == shown)).collect()
}

/// Every language's keywords of a tag in one line.
fn keywords(tag: Option<&TagText>) -> String {
    tag.map(|t| {
        t.keywords
            .iter()
            .filter(|k| !k.words.is_empty())
            .map(|k| format!("{}: {}", k.language, k.words.join(", ")))
            .collect::<Vec<_>>()
            .join(" · ")
    })
    .unwrap_or_default()
}

fn percent(x: f64) -> u32 {
    (x.clamp(0.0, 1.0) * 100.0).round() as u32
}

pub(super) async fn analysis_page(
    State(state): State<AppState>,
    Path((user, dataset, n)): Path<(String, String, String)>,
    Query(q): Query<AnalysisQuery>,
) -> PageResult {
    let id = session_id(&user, &dataset, &n)?;
    state.store().session_required(&id).await?;
    let kept = state.store().checkpoints(&id).await?;
    let asked = q.checkpoint.clone().filter(|c| !c.is_empty()).unwrap_or_else(|| "best".into());
    let column = q.sort.as_deref().and_then(ClassColumn::parse).unwrap_or(ClassColumn::Accuracy);
    let descending = q.dir.as_deref() == Some("desc");
    let base = session_url(&id.to_string());
    let found = state.daemon.checkpoint_analysis(&id, &asked).await?;
    let langs = found.as_ref().map(|a| a.languages.clone()).unwrap_or_default();
    let lang = language(q.lang.as_deref(), &langs);
    let shown = found.as_ref().map_or(asked.clone(), |a| a.epoch.to_string());
    let page = |checkpoint: &str, lang: &str, sort: ClassColumn, desc: bool| {
        let dir = if desc { "desc" } else { "asc" };
        format!(
            "{base}/analysis?{}",
            query(&[("checkpoint", checkpoint), ("lang", lang), ("sort", sort.as_str()), ("dir", dir)])
        )
    };
    let checkpoints = checkpoint_links(&kept, &asked, |c| page(c, &lang, column, descending));
    let languages = language_links(&langs, &lang, |l| page(&shown, l, column, descending));
    let Some(a) = found else {
        return html(&AnalysisTemplate {
            chrome: Chrome::new(&state, "sessions"),
            id: id.to_string(),
            session_url: base,
            checkpoints,
            languages,
            notice: Some(format!(
                "Checkpoint {asked}: {NO_PREDICTIONS}. Checkpoints saved by this version keep them; \
                 an older one has them once it is submitted."
            )),
            epoch: asked,
            source: String::new(),
            rows: 0,
            accuracy: String::new(),
            columns: Vec::new(),
            classes: Vec::new(),
            confusions: Vec::new(),
            packages: Vec::new(),
        });
    };
    let epoch = a.epoch.to_string();
    let gallery = |selection: &[(&str, String)]| {
        let mut pairs: Vec<(&str, &str)> = vec![("checkpoint", &epoch), ("lang", &lang)];
        pairs.extend(selection.iter().map(|(k, v)| (*k, v.as_str())));
        format!("{base}/gallery?{}", query(&pairs))
    };
    let name = |c: u16| label(&a.tags, c, &lang);
    let mut rows = a.classes.clone();
    sort_classes(&mut rows, column, descending, name);
    let classes = rows
        .iter()
        .map(|r| ClassLine {
            id: r.class,
            name: name(r.class),
            keywords: keywords(a.tags.iter().find(|t| t.id == r.class)),
            url: gallery(&[("class", r.class.to_string())]),
            support: r.support,
            correct: r.correct,
            accuracy: view::percent(Some(r.accuracy)),
            accuracy_value: format!("{:.6}", r.accuracy),
            percent: percent(r.accuracy),
            predicted: r.predicted,
            wrong: r.top_wrong.map(|w| {
                let url = gallery(&[("truth", r.class.to_string()), ("predicted", w.class.to_string())]);
                (name(w.class), w.class, w.count, url)
            }),
        })
        .collect();
    let columns = [
        (ClassColumn::Class, "Tag", true),
        (ClassColumn::Name, "Name", false),
        (ClassColumn::Support, "Support", true),
        (ClassColumn::Accuracy, "Accuracy", true),
        (ClassColumn::Predicted, "Predicted as it", true),
        (ClassColumn::Confused, "Most often taken for", false),
    ]
    .into_iter()
    .map(|(c, title, num)| {
        let on = c == column;
        // a second click turns the order; a first one sorts the natural way (names and ids up, counts down)
        let desc = if on {
            !descending
        } else {
            matches!(c, ClassColumn::Support | ClassColumn::Predicted | ClassColumn::Confused)
        };
        Column {
            key: c.as_str(),
            title,
            url: page(&epoch, &lang, c, desc),
            arrow: match (on, descending) {
                (false, _) => "",
                (true, false) => "▲",
                (true, true) => "▼",
            },
            num,
        }
    })
    .collect();
    let confusions = a
        .confusions
        .iter()
        .map(|c| ConfusionLine {
            truth: (c.truth, name(c.truth)),
            predicted: (c.predicted, name(c.predicted)),
            count: c.count,
            url: gallery(&[("truth", c.truth.to_string()), ("predicted", c.predicted.to_string())]),
        })
        .collect();
    let packages = a
        .packages
        .iter()
        .map(|p| PackageLine {
            package: p.package.clone(),
            style: p.style.clone(),
            support: p.support,
            correct: p.correct,
            accuracy: view::percent(Some(p.accuracy)),
            percent: percent(p.accuracy),
        })
        .collect();
    html(&AnalysisTemplate {
        chrome: Chrome::new(&state, "sessions"),
        id: id.to_string(),
        session_url: base,
        checkpoints,
        languages,
        notice: None,
        epoch,
        source: match a.source.as_str() {
            "cache" => "a submission's inference".into(),
            _ => "the validation predictions saved with the checkpoint".into(),
        },
        rows: a.rows,
        accuracy: view::percent(Some(a.accuracy)),
        columns,
        classes,
        confusions,
        packages,
    })
}

#[derive(Debug, Default, Deserialize)]
pub struct GalleryQuery {
    checkpoint: Option<String>,
    lang: Option<String>,
    class: Option<String>,
    truth: Option<String>,
    predicted: Option<String>,
    limit: Option<String>,
}

/// A predicted class of a sticker: (name, probability, whether it is the true tag).
type Guess = (String, String, bool);

struct Item {
    image: String,
    alt: String,
    truth: String,
    correct: bool,
    top: Vec<Guess>,
}

#[derive(Template)]
#[template(path = "gallery.html")]
struct GalleryTemplate {
    chrome: Chrome,
    id: String,
    session_url: String,
    analysis_url: String,
    title: String,
    epoch: String,
    languages: Vec<LanguageLink>,
    notice: Option<String>,
    total: usize,
    items: Vec<Item>,
    more_url: Option<String>,
}

pub(super) async fn gallery_page(
    State(state): State<AppState>,
    Path((user, dataset, n)): Path<(String, String, String)>,
    Query(q): Query<GalleryQuery>,
) -> PageResult {
    let id = session_id(&user, &dataset, &n)?;
    state.store().session_required(&id).await?;
    let selection =
        api::selection(q.class.as_deref(), q.truth.as_deref(), q.predicted.as_deref()).map_err(PageError::bad)?;
    let limit = match q.limit.as_deref().filter(|l| !l.is_empty()) {
        Some(l) => l.parse::<usize>().map_err(|_| PageError::bad(format!("limit {l:?} is not a number")))?,
        None => GALLERY_LIMIT,
    }
    .min(GALLERY_MAX);
    let asked = q.checkpoint.clone().filter(|c| !c.is_empty()).unwrap_or_else(|| "best".into());
    let base = session_url(&id.to_string());
    let found = state.daemon.validation_gallery(&id, &asked, selection, limit).await?;
    let langs = found.as_ref().map(|g| g.languages.clone()).unwrap_or_default();
    let lang = language(q.lang.as_deref(), &langs);
    let shown = found.as_ref().map_or(asked.clone(), |g| g.epoch.to_string());
    let chosen: Vec<(&str, String)> = match selection {
        Selection::Class { class } => vec![("class", class.to_string())],
        Selection::Pair { truth, predicted } => {
            vec![("truth", truth.to_string()), ("predicted", predicted.to_string())]
        }
    };
    let gallery_base = format!("{base}/gallery");
    let url = |lang: &str, limit: Option<usize>| {
        let limit = limit.map(|l| l.to_string()).unwrap_or_default();
        let mut pairs: Vec<(&str, &str)> = vec![("checkpoint", &shown), ("lang", lang)];
        pairs.extend(chosen.iter().map(|(k, v)| (*k, v.as_str())));
        pairs.push(("limit", &limit));
        format!("{gallery_base}?{}", query(&pairs))
    };
    let analysis_url = format!("{base}/analysis?{}", query(&[("checkpoint", &shown), ("lang", &lang)]));
    let languages = language_links(&langs, &lang, |l| url(l, q.limit.as_ref().and(Some(limit))));
    let Some(g) = found else {
        return html(&GalleryTemplate {
            chrome: Chrome::new(&state, "sessions"),
            id: id.to_string(),
            session_url: base,
            analysis_url,
            title: String::new(),
            epoch: asked.clone(),
            languages,
            notice: Some(format!("Checkpoint {asked}: {NO_PREDICTIONS}.")),
            total: 0,
            items: Vec::new(),
            more_url: None,
        });
    };
    let name = |c: u16| label(&g.tags, c, &lang);
    let title = match selection {
        Selection::Class { class } => format!("tag {class} · {}", name(class)),
        Selection::Pair { truth, predicted } => {
            format!("tag {truth} · {} taken for tag {predicted} · {}", name(truth), name(predicted))
        }
    };
    let items = g
        .items
        .iter()
        .map(|i| Item {
            image: image_url(&g.dataset, &i.package, &i.sticker),
            alt: format!("{}/{}", i.package, i.sticker),
            truth: name(i.truth),
            correct: i.correct,
            top: i
                .top
                .iter()
                .map(|t| (name(t.class), format!("{:.1}%", f64::from(t.probability) * 100.0), t.class == i.truth))
                .collect(),
        })
        .collect();
    let more = g.total > g.items.len() && limit < GALLERY_MAX;
    html(&GalleryTemplate {
        chrome: Chrome::new(&state, "sessions"),
        id: id.to_string(),
        session_url: base,
        analysis_url,
        title,
        epoch: g.epoch.to_string(),
        languages,
        notice: None,
        total: g.total,
        more_url: more.then(|| url(&lang, Some(GALLERY_MAX))),
        items,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use axum::http::StatusCode;

    use super::super::fixture::{Fixture, HOSTILE_TAG, PredictionFacts};
    use super::*;

    /// Per class of the running session's checkpoint 2: (support, right).
    fn expected(p: &PredictionFacts) -> BTreeMap<u16, (usize, usize)> {
        let mut out = BTreeMap::new();
        for (v, predicted) in p.dataset.valid.iter().zip(&p.predicted) {
            let e: &mut (usize, usize) = out.entry(v.2).or_default();
            e.0 += 1;
            e.1 += usize::from(v.2 == *predicted);
        }
        out
    }

    /// The `data-class` ids of the per-class table, in page order.
    fn class_order(body: &str) -> Vec<u16> {
        let table = body.split("<table id=\"classes\">").nth(1).unwrap().split("</table>").next().unwrap();
        table.split("<tr data-class=\"").skip(1).map(|r| r.split('"').next().unwrap().parse().unwrap()).collect()
    }

    #[tokio::test]
    async fn the_per_class_view_counts_each_class_and_sorts_by_any_column() {
        let f = Fixture::new().await;
        let p = f.with_predictions().await;
        let want = expected(&p);
        let base = format!("/sessions/{}", f.running);
        let page = f.get(&format!("{base}/analysis")).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let right: usize = want.values().map(|v| v.1).sum();
        let accuracy = crate::web::view::percent(Some(right as f64 / p.dataset.valid.len() as f64));
        assert!(page.body.contains(&format!("<b id=\"accuracy\">{accuracy}</b>")), "{}", page.body);
        assert!(page.body.contains("<b id=\"epoch\">2</b>"), "best is epoch 2");
        for (class, (support, correct)) in &want {
            let row = page.body.split(&format!("<tr data-class=\"{class}\">")).nth(1).unwrap().split("</tr>").next();
            let row = row.unwrap();
            assert!(row.contains(&format!("<td class=\"num\">{support}</td>")), "{row}");
            assert!(row.contains(&format!("({correct})")), "{row}");
            assert!(row.contains(&format!("gallery?checkpoint=2&#38;lang=en&#38;class={class}\"")), "{row}");
            if support != correct {
                let next = p.dataset.next_class(*class);
                assert!(row.contains(&format!("<span class=\"mono muted\">{next}</span>")), "{row}");
                assert!(row.contains(&format!("×{}", support - correct)), "{row}");
            }
        }
        // the default: the least accurate first; any column both ways, ties by id
        let acc = |c: &u16| want[c].1 as f64 / want[c].0 as f64;
        let mut by_acc: Vec<u16> = want.keys().copied().collect();
        by_acc.sort_by(|a, b| acc(a).total_cmp(&acc(b)).then(a.cmp(b)));
        assert_eq!(class_order(&page.body), by_acc);
        assert!(page.body.contains("<th data-sort=\"accuracy\" class=\"num\"><a href="), "{}", page.body);
        assert!(page.body.contains("Accuracy ▲</a>"));
        let desc = f.get(&format!("{base}/analysis?checkpoint=2&sort=accuracy&dir=desc")).await;
        let mut by_acc_desc: Vec<u16> = want.keys().copied().collect();
        by_acc_desc.sort_by(|a, b| acc(b).total_cmp(&acc(a)).then(a.cmp(b)));
        assert_eq!(class_order(&desc.body), by_acc_desc);
        assert!(desc.body.contains("Accuracy ▼</a>"));
        let by_id = f.get(&format!("{base}/analysis?sort=class")).await;
        assert_eq!(class_order(&by_id.body), want.keys().copied().collect::<Vec<_>>());
        let hostile = f.get(&format!("{base}/analysis?sort=%3Cscript%3E&dir=%3Cb%3E")).await;
        assert_eq!(class_order(&hostile.body), by_acc, "an unknown column sorts by accuracy");
        assert!(!hostile.body.contains("%3Cscript") && !hostile.body.contains("<script>"), "{}", hostile.body);

        // tag names: escaped, and in the language asked
        assert!(!page.body.contains(HOSTILE_TAG) && page.body.contains("&#60;script&#62;alert(4)"), "{}", page.body);
        let ko = f.get(&format!("{base}/analysis?lang=ko")).await;
        let first = *want.keys().next().unwrap();
        assert!(ko.body.contains(&format!("한{first}</a>")), "{}", ko.body);
        assert!(ko.body.contains("<a class=\"on\" href=\"/sessions/tester/emoji/1/analysis?checkpoint=2&#38;lang=ko"));

        // the most confused pairs, each opening its stickers; the packages, least accurate first
        for (class, (support, correct)) in want.iter().filter(|(_, v)| v.0 != v.1) {
            let next = p.dataset.next_class(*class);
            let row = page.body.split(&format!("<tr data-truth=\"{class}\" data-predicted=\"{next}\">")).nth(1);
            let row = row.unwrap_or_else(|| panic!("pair {class} -> {next}: {}", page.body)).split("</tr>").next();
            let row = row.unwrap();
            assert!(row.contains(&format!("<td class=\"num\">{}</td>", support - correct)), "{row}");
            assert!(row.contains(&format!("truth={class}&#38;predicted={next}")), "{row}");
        }
        let packages: Vec<&str> = p.dataset.valid.iter().map(|v| v.0.as_str()).collect();
        for package in &packages {
            assert!(page.body.contains(&format!("<td class=\"mono\">{package}</td>")), "{package}");
        }
        // the session page links the view, for the session and each checkpoint
        let session = f.get(&base).await;
        assert!(session.body.contains(&format!("id=\"analysis-link\" href=\"{base}/analysis\"")), "{}", session.body);
        assert!(session.body.contains(&format!("href=\"{base}/analysis?checkpoint=2\">what it gets wrong</a>")));
    }

    #[tokio::test]
    async fn the_gallery_shows_a_class_or_pair_wrong_first_with_the_top_three() {
        let f = Fixture::new().await;
        let p = f.with_predictions().await;
        let want = expected(&p);
        let base = format!("/sessions/{}", f.running);
        let (class, (support, correct)) = want.iter().find(|(_, v)| v.0 != v.1 && v.1 > 0).unwrap();
        let page = f.get(&format!("{base}/gallery?checkpoint=best&class={class}")).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let figures: Vec<&str> = page.body.split("<figure class=\"sticker ").skip(1).collect();
        assert_eq!(figures.len(), *support);
        let wrong = support - correct;
        assert!(figures[..wrong].iter().all(|f| f.starts_with("wrong")), "wrong ones first");
        assert!(figures[wrong..].iter().all(|f| f.starts_with("right")));
        for fig in &figures {
            assert!(fig.contains("<img src=\"/datasets/emoji/images/"), "{fig}");
            assert_eq!(fig.matches("<li").count(), 3, "the top three: {fig}");
        }
        assert!(figures[0].contains("60.0%") && figures[0].contains("30.0%") && figures[0].contains(" ✓</li>"));
        assert!(!page.body.contains(HOSTILE_TAG));
        // a confusion pair: only its stickers
        let next = p.dataset.next_class(*class);
        let pair = f.get(&format!("{base}/gallery?checkpoint=2&truth={class}&predicted={next}&lang=ja")).await;
        assert_eq!(pair.body.matches("<figure class=\"sticker wrong\">").count(), wrong, "{}", pair.body);
        assert_eq!(pair.body.matches("<figure class=\"sticker ").count(), wrong);
        assert!(pair.body.contains(&format!("日{next}")), "{}", pair.body);
        // the images it names are served
        let src = pair.body.split("<img src=\"").nth(1).unwrap().split('"').next().unwrap();
        let image = f.get(src).await;
        assert_eq!((image.status, image.header("content-type")), (StatusCode::OK, "image/png"));
        // the JSON
        let api = f.get(&format!("/api/sessions/{}/checkpoints/2/gallery?class={class}&limit=1", f.running)).await;
        let json: serde_json::Value = serde_json::from_str(&api.body).unwrap();
        assert_eq!((json["total"].as_u64(), json["items"].as_array().unwrap().len()), (Some(*support as u64), 1));
        assert_eq!(json["items"][0]["correct"], false);
        assert_eq!(json["items"][0]["top"].as_array().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn refusals_and_checkpoints_without_predictions() {
        let f = Fixture::new().await;
        let p = f.with_predictions().await;
        let base = format!("/sessions/{}", f.running);
        let api = format!("/api/sessions/{}/checkpoints", f.running);
        for (uri, status) in [
            (format!("{base}/analysis?checkpoint=9"), StatusCode::NOT_FOUND),
            (format!("{base}/analysis?checkpoint=%3Cx%3E"), StatusCode::BAD_REQUEST),
            ("/sessions/tester/emoji/9/analysis".to_string(), StatusCode::NOT_FOUND),
            (format!("{base}/gallery"), StatusCode::BAD_REQUEST),
            (format!("{base}/gallery?class=999"), StatusCode::BAD_REQUEST),
            (format!("{base}/gallery?class=1&limit=x"), StatusCode::BAD_REQUEST),
            (format!("{base}/gallery?class=1&checkpoint=9"), StatusCode::NOT_FOUND),
            (format!("{api}/9/analysis"), StatusCode::NOT_FOUND),
            (format!("{api}/2/gallery?truth=1&predicted=1"), StatusCode::BAD_REQUEST),
            ("/api/sessions/tester/emoji/9/checkpoints/best/analysis".to_string(), StatusCode::NOT_FOUND),
        ] {
            let a = f.get(&uri).await;
            assert_eq!(a.status, status, "{uri}: {}", a.body);
            assert!(!a.body.contains("<x>"), "{uri}: {}", a.body);
        }
        let json = f.get(&format!("{api}/2/analysis")).await;
        assert_eq!(json.status, StatusCode::OK);
        let json: serde_json::Value = serde_json::from_str(&json.body).unwrap();
        assert_eq!(json["rows"], p.dataset.valid.len());
        assert_eq!(json["source"], "checkpoint");
        assert!(json["confusions"].as_array().unwrap().iter().all(|c| c["count"].as_u64() > Some(0)));
        // a checkpoint saved before the predictions were kept: the views say so, the API is a 404 saying so
        let sdir = crate::home::SessionDir::new(f.state.home().session(&f.running));
        std::fs::remove_file(sdir.checkpoint_valid(2)).unwrap();
        let page = f.get(&format!("{base}/analysis?checkpoint=2")).await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.body.contains(NO_PREDICTIONS) && page.body.contains("id=\"no-predictions\""), "{}", page.body);
        let gallery = f.get(&format!("{base}/gallery?class=1")).await;
        assert!(gallery.body.contains(NO_PREDICTIONS), "{}", gallery.body);
        let json = f.get(&format!("{api}/2/analysis")).await;
        assert_eq!(json.status, StatusCode::NOT_FOUND);
        assert!(json.body.contains(NO_PREDICTIONS), "{}", json.body);
    }
}

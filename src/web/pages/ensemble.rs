//! The ensemble builder (`/ensemble?m=SESSION:CHECKPOINT...`): the chosen members, the cached checkpoints of their
//! dataset to add, and the command that submits them.

use askama::Template;
use axum::extract::{RawQuery, State};

use super::{AppState, Chrome, PageResult, html, repeated, session_url, spec_json, spec_str};
use crate::core::session::SessionId;
use crate::web::view;

pub struct MemberView {
    member: String,
    session: String,
    url: String,
    model: String,
    name: String,
    epoch: i64,
    val_acc: String,
    val_loss: String,
    size: String,
}

/// A checkpoint with cached probabilities, offered to the builder.
pub struct CachedView {
    member: String,
    add_url: String,
    tta: String,
    val_acc: String,
}

#[derive(Template)]
#[template(path = "ensemble.html")]
struct EnsembleTemplate {
    chrome: Chrome,
    errors: Vec<String>,
    members: Vec<MemberView>,
    command: String,
    /// The dataset of the members (or `?d=`), whose cache is offered.
    dataset: String,
    cached: Vec<CachedView>,
    /// With no dataset yet: the registered ones, to pick from.
    datasets: Vec<String>,
}

/// The ensemble builder: the members chosen on session pages or from the cached checkpoints of the dataset, a weight
/// each, the validation accuracy of the mix (asked of `/api/datasets/{d}/ensemble` as the weights change) and a submit
/// button (`POST /api/submissions`, behind the token like every mutating route).
pub(super) async fn ensemble_page(
    State(state): State<AppState>,
    caller: crate::core::access::Caller,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let mut errors = Vec::new();
    let mut members = Vec::new();
    let chosen = repeated(raw.as_deref(), "m");
    for m in chosen.iter().take(50) {
        let Some((sid, name)) = m.rsplit_once(':') else {
            errors.push(format!("{m:?} is not SESSION:CHECKPOINT"));
            continue;
        };
        let Ok(id) = sid.parse::<SessionId>() else {
            errors.push(format!("{sid:?} is not a session id"));
            continue;
        };
        let Some(row) = state.store().session(&id).await?.filter(|_| caller.sees(&id.user)) else {
            errors.push(format!("unknown session {id}"));
            continue;
        };
        // `7`, `best` or `last`, resolved as everywhere else
        let c = match name.parse::<crate::core::checkpoint::CheckpointRef>() {
            Ok(reference) => match state.daemon.checkpoint_row(&id, reference).await {
                Ok(c) => c,
                Err(e) => {
                    errors.push(e.to_string());
                    continue;
                }
            },
            Err(e) => {
                errors.push(format!("{m:?}: {e}"));
                continue;
            }
        };
        members.push(MemberView {
            member: m.clone(),
            session: id.to_string(),
            url: session_url(&id.to_string()),
            model: spec_str(&spec_json(&row), "model"),
            name: name.to_string(),
            epoch: c.epoch,
            val_acc: view::percent(Some(c.val_acc)),
            val_loss: c.val_loss.map(view::number).unwrap_or_default(),
            size: view::bytes(c.bytes),
        });
    }
    let command = format!("rush submit {}", members.iter().map(|m| m.member.as_str()).collect::<Vec<_>>().join(" "));
    let asked: Vec<(String, String)> = serde_urlencoded::from_str(raw.as_deref().unwrap_or("")).unwrap_or_default();
    let dataset = members
        .first()
        .and_then(|m| m.session.parse::<SessionId>().ok())
        .map(|id| id.dataset)
        .or_else(|| asked.into_iter().find(|(k, _)| k == "d").map(|(_, v)| v))
        .unwrap_or_default();
    let mut cached = Vec::new();
    let registered: Vec<String> = state.store().datasets().await?.into_iter().map(|d| d.name).collect();
    let dataset = if dataset.is_empty() || registered.contains(&dataset) {
        dataset
    } else {
        errors.push(format!("unknown dataset {dataset:?} (registered: {})", registered.join(", ")));
        String::new()
    };
    if !dataset.is_empty() {
        match state.daemon.cached_checkpoints(&dataset, caller.only().as_deref()).await {
            Ok(list) => {
                let resolved: Vec<String> = members.iter().map(|m| format!("{}:{}", m.session, m.epoch)).collect();
                for c in list {
                    let member = format!("{}:{}", c.session, c.epoch);
                    if chosen.contains(&member) || resolved.contains(&member) {
                        continue;
                    }
                    let mut params: Vec<(&str, &str)> = chosen.iter().map(|m| ("m", m.as_str())).collect();
                    params.push(("m", &member));
                    cached.push(CachedView {
                        add_url: format!("/ensemble?{}", serde_urlencoded::to_string(&params).unwrap_or_default()),
                        member,
                        tta: c.tta.to_string(),
                        val_acc: view::percent(c.val_acc),
                    });
                }
            }
            Err(e) => errors.push(format!("cached checkpoints of {dataset}: {e}")),
        }
    }
    let datasets = if dataset.is_empty() { registered } else { Vec::new() };
    html(&EnsembleTemplate {
        chrome: Chrome::new(&state, "ensemble"),
        errors,
        members,
        command,
        dataset,
        cached,
        datasets,
    })
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::super::fixture::Fixture;

    #[tokio::test]
    async fn the_builder_resolves_members_and_names_the_bad_ones() {
        let f = Fixture::new().await;
        let r = f.running.to_string();
        let page = f.get(&format!("/ensemble?m={r}:best&m=nocolon&m=tester/emoji/9:1&m={r}:x")).await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.body.contains(&format!("data-session=\"{r}\" data-epoch=\"2\"")), "`best` is epoch 2");
        assert!(page.body.contains(&format!("rush submit {r}:best</pre>")), "{}", page.body);
        assert!(page.body.contains("&#34;nocolon&#34; is not SESSION:CHECKPOINT"), "{}", page.body);
        assert!(page.body.contains("unknown session tester/emoji/9"), "{}", page.body);
        assert!(page.body.contains(&format!("&#34;{r}:x&#34;: invalid checkpoint name")), "{}", page.body);
        assert!(page.body.contains("data-dataset=\"emoji\""), "the members' dataset");
        // Without members: pick a dataset; an unknown one is named.
        let page = f.get("/ensemble").await;
        assert!(page.body.contains("href=\"/ensemble?d=emoji\""), "{}", page.body);
        let page = f.get("/ensemble?d=nope").await;
        assert!(page.body.contains("unknown dataset &#34;nope&#34; (registered: emoji)"), "{}", page.body);
    }
}

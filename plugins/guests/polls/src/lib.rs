//! `application/poll+json`, a poll:
//! - `{"type":"application/poll+json","action":"open","question":"...","options":["...","..."]}`:
//!   any member opens a poll (a question, 2 to 32 options);
//! - `{"type":"application/poll+json","action":"vote","poll":"<open commit>","option":N}`: one
//!   vote per member while the poll is open, `N` an index into the options;
//! - `{"type":"application/poll+json","action":"close","poll":"<open commit>"}`: only the
//!   poll's author or an admin closes it, once.
//!
//! "While open" and "one vote" are judged on the commit's own history (the commits between the
//! poll and the vote), so every member reaches the same verdict.

use serde_json::Value;

wit_bindgen::generate!({ path: "../../wit", world: "message-type" });

use swarm::plugin::types::{CommitInfo, Role};

const POLL: &str = "application/poll+json";
const MAX_OPTIONS: usize = 32;

struct Polls;

/// The poll an action refers to and what happened to it since.
struct Poll<'a> {
    open: &'a CommitInfo,
    options: usize,
    since: &'a [CommitInfo],
}

fn action(o: &guest::Object) -> Result<&str, String> {
    guest::string(o, "action")
}

/// The poll a vote or close refers to, from the context.
fn poll<'a>(o: &guest::Object, context: &'a Context) -> Result<Poll<'a>, String> {
    let id = guest::commit_id(o, "poll")?;
    let Some(open) = context.commits.iter().find(|c| c.id == id) else {
        return Err(format!("poll {id} is not an earlier commit of this conversation"));
    };
    let body = guest::object(&open.body).map_err(|_| format!("{id} is not a poll"))?;
    if guest::type_of(&open.body).as_deref() != Some(POLL) || action(&body).ok() != Some("open") {
        return Err(format!("{id} is not the opening of a poll"));
    }
    let options = body.get("options").and_then(Value::as_array).map_or(0, Vec::len);
    let since = context.since.first().map(Vec::as_slice).unwrap_or(&[]);
    Ok(Poll { open, options, since })
}

/// The actions on poll `id` among `commits` made by anyone (`author: None`) or by one author.
fn actions_on<'a>(
    commits: &'a [CommitInfo],
    id: &'a str,
    kind: &'a str,
    author: Option<&'a str>,
) -> impl Iterator<Item = &'a CommitInfo> + 'a {
    commits.iter().filter(move |c| {
        author.is_none_or(|a| c.author == a)
            && guest::object(&c.body).is_ok_and(|o| {
                guest::type_of(&c.body).as_deref() == Some(POLL)
                    && action(&o).ok() == Some(kind)
                    && o.get("poll").and_then(Value::as_str) == Some(id)
            })
    })
}

fn check_open(o: &guest::Object) -> Result<(), String> {
    if guest::string(o, "question")?.trim().is_empty() {
        return Err("the question is empty".into());
    }
    let Some(options) = o.get("options").and_then(Value::as_array) else {
        return Err("\"options\" must be a list of strings".into());
    };
    if options.len() < 2 || options.len() > MAX_OPTIONS {
        return Err(format!("a poll has 2 to {MAX_OPTIONS} options, not {}", options.len()));
    }
    if options.iter().any(|x| !x.is_string()) {
        return Err("\"options\" must be a list of strings".into());
    }
    Ok(())
}

fn check_vote(view: &CommitView, o: &guest::Object, context: &Context) -> Result<(), String> {
    let p = poll(o, context)?;
    let Some(n) = o.get("option").and_then(Value::as_u64) else {
        return Err("\"option\" must be a non-negative integer".into());
    };
    if n >= p.options as u64 {
        return Err(format!("option {n} is out of range (the poll has {} options)", p.options));
    }
    if actions_on(p.since, &p.open.id, "close", None).next().is_some() {
        return Err(format!("poll {} is closed", p.open.id));
    }
    if let Some(v) = actions_on(p.since, &p.open.id, "vote", Some(&view.signer)).next() {
        return Err(format!("{} already voted in poll {} ({})", view.signer, p.open.id, v.id));
    }
    Ok(())
}

fn check_close(view: &CommitView, o: &guest::Object, context: &Context) -> Result<(), String> {
    let p = poll(o, context)?;
    if p.open.author != view.signer && view.role != Role::Admin {
        return Err(format!("only the poll's author or an admin closes poll {}", p.open.id));
    }
    if actions_on(p.since, &p.open.id, "close", None).next().is_some() {
        return Err(format!("poll {} is already closed", p.open.id));
    }
    Ok(())
}

impl Guest for Polls {
    fn types() -> Vec<String> {
        vec![POLL.into()]
    }

    fn needs(view: CommitView) -> Needs {
        let id: Vec<String> = guest::object(&view.body)
            .ok()
            .and_then(|o| guest::commit_id(&o, "poll").ok().map(String::from))
            .into_iter()
            .collect();
        Needs { commits: id.clone(), since: id, files: vec![] }
    }

    fn validate(view: CommitView, context: Context) -> Result<(), String> {
        let o = guest::object(&view.body)?;
        match action(&o)? {
            "open" => check_open(&o),
            "vote" => check_vote(&view, &o, &context),
            "close" => check_close(&view, &o, &context),
            other => Err(format!("unknown poll action {other:?} (open, vote or close)")),
        }
    }

    fn summary(body: String) -> Option<String> {
        let o = guest::object(&body).ok()?;
        Some(match action(&o).ok()? {
            "open" => format!("poll: {}", guest::string(&o, "question").ok()?),
            "vote" => format!("voted for option {}", o.get("option")?.as_u64()?),
            "close" => "closed a poll".into(),
            _ => return None,
        })
    }
}

export!(Polls);

//! `application/edited-message`: only the author edits, only an earlier text message (or an
//! earlier edit) of the conversation. The same rule as swarm's native `edit-target`.


wit_bindgen::generate!({ path: "../../wit", world: "message-type" });



const EDIT: &str = "application/edited-message";

struct Edits;

impl Guest for Edits {
    fn types() -> Vec<String> {
        vec![EDIT.into()]
    }

    fn needs(view: CommitView) -> Needs {
        let commits = guest::object(&view.body)
            .ok()
            .and_then(|o| guest::commit_id(&o, "edit").ok().map(String::from))
            .into_iter()
            .collect();
        Needs { commits, since: vec![], files: vec![] }
    }

    fn validate(view: CommitView, context: Context) -> Result<(), String> {
        let o = guest::object(&view.body)?;
        guest::string(&o, "body")?;
        let target = guest::commit_id(&o, "edit")?;
        let Some(t) = context.commits.iter().find(|c| c.id == target) else {
            return Err(format!("{target} is not an earlier commit of this conversation"));
        };
        if t.author != view.signer {
            return Err(format!("{target} was not written by {}", view.signer));
        }
        match guest::type_of(&t.body).as_deref() {
            Some("text/plain") | Some(EDIT) => Ok(()),
            _ => Err(format!("{target} is not a text message")),
        }
    }

    fn summary(body: String) -> Option<String> {
        let o = guest::object(&body).ok()?;
        let text = guest::string(&o, "body").ok()?;
        Some(if text.is_empty() { "(message deleted)".into() } else { format!("(edited) {text}") })
    }
}

export!(Edits);

//! `application/reaction+json`: `{"type":"application/reaction+json","react-to":"<commit>",
//! "body":"👍"}`, a reaction (a short non-empty text) to an earlier message of the conversation.


wit_bindgen::generate!({ path: "../../wit", world: "message-type" });



const REACTION: &str = "application/reaction+json";
/// A reaction is an emoji or a word, not a message.
const MAX_REACTION_CHARS: usize = 32;

struct Reactions;

impl Guest for Reactions {
    fn types() -> Vec<String> {
        vec![REACTION.into()]
    }

    fn needs(view: CommitView) -> Needs {
        let commits = guest::object(&view.body)
            .ok()
            .and_then(|o| guest::commit_id(&o, "react-to").ok().map(String::from))
            .into_iter()
            .collect();
        Needs { commits, since: vec![], files: vec![] }
    }

    fn validate(view: CommitView, context: Context) -> Result<(), String> {
        let o = guest::object(&view.body)?;
        let reaction = guest::string(&o, "body")?;
        let chars = reaction.chars().count();
        if chars == 0 || chars > MAX_REACTION_CHARS {
            return Err(format!("a reaction has 1 to {MAX_REACTION_CHARS} characters, not {chars}"));
        }
        let target = guest::commit_id(&o, "react-to")?;
        let Some(t) = context.commits.iter().find(|c| c.id == target) else {
            return Err(format!("{target} is not an earlier commit of this conversation"));
        };
        if t.parents.len() != 1 {
            return Err(format!("{target} is not a message (reactions go to messages)"));
        }
        Ok(())
    }

    fn summary(body: String) -> Option<String> {
        let o = guest::object(&body).ok()?;
        Some(format!("reacted {}", guest::string(&o, "body").ok()?))
    }
}

export!(Reactions);

//! `application/x-dice+json`: `{"type":"application/x-dice+json","sides":6,"result":4}` — a
//! die with 2 to 100 sides, a result between 1 and the number of sides.
//!
//! Everything a plugin author needs: swarm's WIT package (`plugins/wit/`), `wit-bindgen`, and
//! the four functions of the world `message-type`.

wit_bindgen::generate!({ path: "../../../plugins/wit", world: "message-type" });

use serde_json::Value;

struct Dice;

impl Guest for Dice {
    fn types() -> Vec<String> {
        vec!["application/x-dice+json".into()]
    }

    fn needs(_view: CommitView) -> Needs {
        Needs { commits: vec![], since: vec![], files: vec![] }
    }

    fn validate(view: CommitView, _context: Context) -> Result<(), String> {
        let body: Value = serde_json::from_str(&view.body).map_err(|e| format!("not JSON: {e}"))?;
        let sides = body.get("sides").and_then(Value::as_u64).ok_or("\"sides\" must be a number")?;
        let result = body.get("result").and_then(Value::as_u64).ok_or("\"result\" must be a number")?;
        if !(2..=100).contains(&sides) {
            return Err(format!("a die has 2 to 100 sides, not {sides}"));
        }
        if !(1..=sides).contains(&result) {
            return Err(format!("a {sides}-sided die cannot roll {result}"));
        }
        Ok(())
    }

    fn summary(body: String) -> Option<String> {
        let body: Value = serde_json::from_str(&body).ok()?;
        Some(format!("rolled {} on a d{}", body.get("result")?, body.get("sides")?))
    }
}

export!(Dice);

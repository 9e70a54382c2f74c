//! `application/x-file-probe+json`, a plugin for swarm's own tests of the host's file access:
//! `{"type":"application/x-file-probe+json","path":"profile.vcf","contains":"Lunch"}` is
//! allowed only if `path` is a file of the parent tree whose bytes contain `contains`. It shows
//! what `needs.files` gives a plugin: presence, blob id and (up to the host's limit) bytes.

wit_bindgen::generate!({ path: "../../wit", world: "message-type" });

const PROBE: &str = "application/x-file-probe+json";

struct FileProbe;

impl Guest for FileProbe {
    fn types() -> Vec<String> {
        vec![PROBE.into()]
    }

    fn needs(view: CommitView) -> Needs {
        let files = guest::object(&view.body)
            .ok()
            .and_then(|o| guest::string(&o, "path").ok().map(String::from))
            .into_iter()
            .collect();
        Needs { commits: vec![], since: vec![], files }
    }

    fn validate(view: CommitView, context: Context) -> Result<(), String> {
        let o = guest::object(&view.body)?;
        let path = guest::string(&o, "path")?;
        let wanted = guest::string(&o, "contains")?;
        let Some(file) = context.files.iter().find(|f| f.path == path) else {
            return Err(format!("the host did not answer for {path}"));
        };
        if file.blob.is_none() {
            return Err(format!("{path} is not in the parent tree"));
        }
        let Some(content) = &file.content else {
            return Err(format!("{path} is larger than the host lets a plugin read"));
        };
        let text = String::from_utf8_lossy(content);
        if text.contains(wanted) {
            Ok(())
        } else {
            Err(format!("{path} does not contain {wanted:?}"))
        }
    }

    fn summary(_body: String) -> Option<String> {
        None
    }
}

export!(FileProbe);

//! `application/call-history+json`, both shapes of the seed: `to` + `duration` (a finished 1:1
//! call) or `uri` + `device` + `confId` [+ `duration`] (a hosted conference); `duration` is a
//! decimal number of milliseconds. The same rule as swarm's native `call-history-shape`.


wit_bindgen::generate!({ path: "../../wit", world: "message-type" });



struct CallHistory;

impl Guest for CallHistory {
    fn types() -> Vec<String> {
        vec!["application/call-history+json".into()]
    }

    fn needs(_view: CommitView) -> Needs {
        Needs { commits: vec![], since: vec![], files: vec![] }
    }

    fn validate(view: CommitView, _context: Context) -> Result<(), String> {
        let o = guest::object(&view.body)?;
        let to = guest::opt_string(&o, "to")?;
        let duration = guest::opt_string(&o, "duration")?;
        let uri = guest::opt_string(&o, "uri")?;
        let device = guest::opt_string(&o, "device")?;
        let conf_id = guest::opt_string(&o, "confId")?;
        if let Some(d) = duration {
            if !guest::is_decimal(d) {
                return Err("\"duration\" must be a decimal number".into());
            }
        }
        let one_to_one = to.is_some() && duration.is_some() && uri.is_none() && conf_id.is_none();
        let conference = to.is_none() && uri.is_some() && device.is_some() && conf_id.is_some();
        if one_to_one || conference {
            Ok(())
        } else {
            Err("expected \"to\"+\"duration\", or \"uri\"+\"device\"+\"confId\" [+\"duration\"]".into())
        }
    }

    fn summary(body: String) -> Option<String> {
        let o = guest::object(&body).ok()?;
        let ms = guest::string(&o, "duration").ok().and_then(|d| d.parse::<u64>().ok());
        Some(match (guest::string(&o, "confId").is_ok(), ms) {
            (true, _) => "conference call".into(),
            (false, Some(ms)) => format!("call, {} s", ms / 1000),
            (false, None) => "call".into(),
        })
    }
}

export!(CallHistory);

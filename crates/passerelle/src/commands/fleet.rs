//! A scheduler and workers run as child processes of this binary, for the demo and the
//! benchmark.

use anyhow::Context as _;
use passerelle_core::config::Settings;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Key id of the throwaway vault key the demo and benchmark create when none is configured.
pub const DEMO_KEY_ID: &str = "demo";

pub struct LocalFleet {
    settings: Settings,
    db_url: String,
    /// The development vault key, when the fleet runs on one (else the children read the
    /// configured ring from the same configuration as this process).
    vault_key: Option<String>,
    pub log_dir: std::path::PathBuf,
    children: Vec<(String, Child)>,
}

impl LocalFleet {
    pub fn new(
        settings: &Settings,
        db_url: &str,
        vault_key: Option<String>,
        name: &str,
    ) -> anyhow::Result<Self> {
        let log_dir = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&log_dir)?;
        Ok(Self {
            settings: settings.clone(),
            db_url: db_url.to_owned(),
            vault_key,
            log_dir,
            children: Vec::new(),
        })
    }

    /// Process ids of the running children.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|(_, c)| c.id()).collect()
    }

    pub fn spawn(&mut self, name: &str, args: &[&str]) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("cannot find the passerelle executable")?;
        let log = std::fs::File::create(self.log_dir.join(format!("{name}.log")))?;
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .env("PASSERELLE__DATABASE__URL", &self.db_url)
            .env("PASSERELLE__AMQP__PREFIX", &self.settings.amqp.prefix)
            .env("PASSERELLE__HTTP__ALLOW_PRIVATE_NETWORKS", "true")
            .env("PASSERELLE__SCHEDULER__INTERVAL_MS", "500")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(key) = &self.vault_key {
            cmd.env("PASSERELLE__VAULT__ACTIVE_KEY", DEMO_KEY_ID).env(
                format!(
                    "PASSERELLE__VAULT__KEYS__{}",
                    DEMO_KEY_ID.to_ascii_uppercase()
                ),
                key,
            );
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start the demo {name}"))?;
        self.children.push((name.to_owned(), child));
        Ok(())
    }

    /// SIGTERM, then wait for a graceful exit (SIGKILL after 15 s).
    pub fn stop(&mut self) {
        for (_, child) in &self.children {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for (name, child) in &mut self.children {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => {
                        eprintln!("{name} did not stop in time; killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        self.children.clear();
    }
}

impl Drop for LocalFleet {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

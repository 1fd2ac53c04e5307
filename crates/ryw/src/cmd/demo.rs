//! `ryw demo`: for now, bring a cluster up in a temporary folder, show its
//! status and tear it down. The bench issue completes it.

use crate::cli::DemoArgs;
use ryw_cluster::UpOptions;

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new().prefix("ryw-demo-").tempdir()?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))?;
    }
    let dir = tmp.path().join("cluster");
    let opts = UpOptions {
        dir: dir.clone(),
        pg_bin: args.pg_bin.clone(),
        ..UpOptions::default()
    };
    let info = ryw_cluster::up(&opts).await?;
    super::cluster::print_info(&info);
    let (info, nodes) = ryw_cluster::status(&dir).await?;
    super::cluster::print_status(&info, &nodes);
    if args.keep {
        println!("cluster kept; press Ctrl-C to stop it");
        tokio::signal::ctrl_c().await?;
    }
    super::cluster::down(&dir, true)?;
    Ok(())
}

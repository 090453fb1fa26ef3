use clap::Args;
#[derive(Args, Debug)]
pub struct DemoArgs {}
pub async fn demo(_a: DemoArgs) -> anyhow::Result<()> { Ok(()) }

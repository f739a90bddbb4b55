//! `spark models`: mmpretrain's SparK model names (SPARK.md section 8.3), with the parameters and
//! FLOPs of the architecture each builds next to what mmpretrain's page reports.

use super::info::{zoo_macs, zoo_model};
use crate::error::CliResult;
use clap::Args;
use spark::zoo;

#[derive(Args, Debug, Clone)]
pub struct ModelsArgs {}

pub fn run(_a: ModelsArgs) -> CliResult<()> {
    outln!(
        "{:<40} {:<9} {:>8} {:>8} {:>7} {:>7} {:>6}  config",
        "name",
        "task",
        "params",
        "(page)",
        "FLOPs",
        "(page)",
        "top-1"
    );
    for e in zoo::MODELS {
        let (_, m) = zoo_model(e.name)?;
        let params = m.num_params() as f64 / 1e6;
        let flops = zoo_macs(&m, 224) as f64 / 1e9;
        let top1 = e.top1.map(|t| format!("{t:.2}")).unwrap_or_else(|| "-".into());
        outln!(
            "{:<40} {:<9} {:>7.2}M {:>7.2}M {:>6.2}G {:>6.2}G {:>6}  {}",
            e.name,
            e.task.as_str(),
            params,
            e.page_params_m,
            flops,
            e.page_flops_g,
            top1,
            e.config
        );
    }
    outln!();
    outln!("Parameters exclude BatchNorm running statistics; FLOPs are multiply-accumulates at 224 px,");
    outln!("of the backbone alone for the pretraining models (as the page counts them). The page's");
    outln!("23.52M / 1.31G for resnet50_spark-pre_300e_in1k match no ResNet-50 (SPARK.md 8.3).");
    outln!("`spark info NAME` describes one model.");
    Ok(())
}

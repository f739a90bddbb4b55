//! Prints the sparse vs dense-masked conv table of docs/benchmarks.md (section "sparse").
//!
//! `cargo run --release -p spark-sparse --example sparse_table -- [reps] [ratio,ratio,...] [layer-filter]`

use spark_sparse::bench::{default_ratios, format_table, resnet_convnext_shapes, sparse_vs_dense_table};

fn main() -> spark_engine::Result<()> {
    // Freed memory stays in the process, as in the `spark` binary (no page faults per call).
    spark_engine::cpu::malloc::keep_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let reps = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let ratios = match args.get(2) {
        Some(s) => s.split(',').filter_map(|r| r.parse().ok()).collect(),
        None => default_ratios(),
    };
    let filter = args.get(3).cloned().unwrap_or_default();
    let shapes: Vec<_> = resnet_convnext_shapes().into_iter().filter(|s| s.name.contains(&filter)).collect();
    let rows = sparse_vs_dense_table(&shapes, 8, &ratios, reps)?;
    println!("{}", format_table(&rows));
    Ok(())
}

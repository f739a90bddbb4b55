//! Parameter and state-dict counts equal SPARK.md 9.1. Models are built shape-only by the same
//! constructors that build runnable ones (no weight memory), then counted.

use spark_engine::Rng;
use spark_nn::{build_backbone, Backbone, BackboneConfig, Kind, BACKBONE_NAMES};

fn shape_only(name: &str, num_classes: usize) -> Box<dyn Backbone> {
    let cfg = BackboneConfig { num_classes, shape_only: true, ..Default::default() };
    build_backbone(name, &cfg, &mut Rng::new(0)).unwrap()
}

fn state_len(m: &dyn Backbone) -> usize {
    m.state_dict().len()
}

#[test]
fn resnet_parameter_counts_match_spark_md() {
    let table = [
        ("resnet18", 11_689_512, 11_176_512),
        ("resnet34", 21_797_672, 21_284_672),
        ("resnet50", 25_557_032, 23_508_032),
        ("resnet101", 44_549_160, 42_500_160),
        ("resnet152", 60_192_808, 58_143_808),
        ("resnet200", 64_673_832, 62_624_832),
    ];
    for (name, with_fc, without) in table {
        assert_eq!(shape_only(name, 1000).num_parameters(), with_fc, "{name} with fc");
        assert_eq!(shape_only(name, 0).num_parameters(), without, "{name} without fc");
    }
}

#[test]
fn convnext_parameter_counts_match_spark_md() {
    let table = [
        ("convnext_tiny", 28_589_128, 27_818_592),
        ("convnext_small", 50_223_688, 49_453_152),
        ("convnext_base", 88_591_464, 87_564_416),
        ("convnext_large", 197_767_336, 196_227_264),
        ("convnextv2_tiny", 28_635_496, 27_864_960),
    ];
    for (name, with_head, without) in table {
        assert_eq!(shape_only(name, 1000).num_parameters(), with_head, "{name} with head");
        assert_eq!(shape_only(name, 0).num_parameters(), without, "{name} without head");
    }
}

#[test]
fn state_dict_entry_counts_match_spark_md() {
    assert_eq!(state_len(&*shape_only("resnet50", 0)), 318);
    assert_eq!(state_len(&*shape_only("resnet18", 0)), 120);
    assert_eq!(state_len(&*shape_only("convnext_tiny", 0)), 178);
    assert_eq!(state_len(&*shape_only("convnext_small", 0)), 340);
}

#[test]
fn resnet50_names_and_shapes_follow_torchvision() {
    let m = shape_only("resnet50", 1000);
    let sd: Vec<(String, Vec<usize>, Kind)> = m.state_dict().into_iter().map(|(n, t, k)| (n, t.shape(), k)).collect();
    let get = |n: &str| sd.iter().find(|e| e.0 == n).unwrap_or_else(|| panic!("no key {n}")).clone();
    assert_eq!(sd[0].0, "conv1.weight");
    assert_eq!(get("conv1.weight").1, vec![64, 3, 7, 7]);
    assert_eq!(get("bn1.num_batches_tracked").1, Vec::<usize>::new());
    assert_eq!(get("bn1.running_var").2, Kind::Buffer);
    assert_eq!(get("layer1.0.downsample.0.weight").1, vec![256, 64, 1, 1]);
    assert_eq!(get("layer1.0.downsample.1.running_mean").1, vec![256]);
    // v1.5: the stride sits on the 3x3 conv; shapes of a stage-2 first block.
    assert_eq!(get("layer2.0.conv1.weight").1, vec![128, 256, 1, 1]);
    assert_eq!(get("layer2.0.conv2.weight").1, vec![128, 128, 3, 3]);
    assert_eq!(get("layer4.2.bn3.weight").1, vec![2048]);
    assert_eq!(get("fc.weight").1, vec![1000, 2048]);
    assert_eq!(m.feature_channels(), vec![256, 512, 1024, 2048]);
    assert_eq!(m.downsample_ratio(), 32);
}

#[test]
fn convnext_names_and_shapes_follow_the_official_repo() {
    let m = shape_only("convnext_tiny", 1000);
    let sd: Vec<(String, Vec<usize>)> = m.state_dict().into_iter().map(|(n, t, _)| (n, t.shape())).collect();
    let get = |n: &str| sd.iter().find(|e| e.0 == n).unwrap_or_else(|| panic!("no key {n}")).1.clone();
    assert_eq!(get("downsample_layers.0.0.weight"), vec![96, 3, 4, 4]);
    assert_eq!(get("downsample_layers.0.1.weight"), vec![96]);
    assert_eq!(get("downsample_layers.1.0.bias"), vec![96]);
    assert_eq!(get("downsample_layers.1.1.weight"), vec![192, 96, 2, 2]);
    assert_eq!(get("stages.2.8.dwconv.weight"), vec![384, 1, 7, 7]);
    assert_eq!(get("stages.0.0.pwconv1.weight"), vec![384, 96]);
    assert_eq!(get("stages.0.0.pwconv2.weight"), vec![96, 384]);
    assert_eq!(get("stages.3.2.gamma"), vec![768]);
    assert_eq!(get("norm.weight"), vec![768]);
    assert_eq!(get("head.weight"), vec![1000, 768]);
    assert_eq!(m.feature_channels(), vec![96, 192, 384, 768]);
    let v2 = shape_only("convnextv2_tiny", 0);
    let names: Vec<String> = v2.state_dict().into_iter().map(|(n, t, _)| format!("{n}:{:?}", t.shape())).collect();
    assert!(names.contains(&"stages.1.0.grn.gamma:[1, 1, 1, 768]".to_string()), "{names:?}");
    assert!(names.contains(&"stages.1.0.grn.beta:[1, 1, 1, 768]".to_string()));
    assert!(!names.iter().any(|n| n.contains("gamma:[192]")), "V2 has no layer scale");
}

#[test]
fn other_backbones_report_their_channels() {
    assert_eq!(shape_only("resnet18", 0).feature_channels(), vec![64, 128, 256, 512]);
    assert_eq!(shape_only("convnext_base", 0).feature_channels(), vec![128, 256, 512, 1024]);
    assert_eq!(shape_only("convnext_large", 0).feature_channels(), vec![192, 384, 768, 1536]);
    assert_eq!(shape_only("resnet50", 0).num_features(), 2048);
    assert_eq!(shape_only("resnet50", 0).num_classes(), 0);
    assert_eq!(shape_only("resnet50", 10).num_classes(), 10);
    assert_eq!(BACKBONE_NAMES.len(), 13);
}

#[test]
fn unknown_backbone_is_a_clear_error() {
    let err = build_backbone("resnet19", &BackboneConfig::default(), &mut Rng::new(0)).err().unwrap();
    let msg = err.to_string();
    assert!(msg.contains("resnet19") && msg.contains("resnet18") && msg.contains("convnextv2_base"), "{msg}");
}

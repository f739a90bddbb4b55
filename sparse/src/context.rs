//! `SparseContext`: decides the output sites of strided ops and caches active sets and kernel
//! maps for one forward pass. It replaces SparK's module-global "current active map": the caller
//! owns it and passes it to every op, so two models can run side by side.

use crate::{ActiveSet, KernelGeom, KernelMap};
use spark_engine::{Error, Result};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Clone)]
enum Mode {
    /// SparK: every scale's sites are the patch mask `[batch, fh, fw]` upsampled to that scale.
    Hierarchical { patch: Vec<bool>, batch: usize, fh: usize, fw: usize },
    /// A strided op's output site is active when any input in its window is active.
    Generic,
}

/// Output-site policy plus the per-forward caches of active sets and kernel maps.
#[derive(Debug)]
pub struct SparseContext {
    mode: Mode,
    /// Active sets by resolution (batch, h, w).
    sets: HashMap<(usize, usize, usize), Arc<ActiveSet>>,
    /// Generic mode: output set of a strided op, by (input set id, geometry).
    derived: HashMap<(u64, KernelGeom), Arc<ActiveSet>>,
    maps: HashMap<(u64, u64, KernelGeom), Arc<KernelMap>>,
}

impl SparseContext {
    /// SparK's hierarchical masking: `patch_mask` is `[batch, fh, fw]` (true = visible). The
    /// sites at resolution (h, w) are the mask repeated h/fh times along height and w/fw along
    /// width.
    pub fn hierarchical(patch_mask: &[bool], batch: usize, fh: usize, fw: usize) -> Result<SparseContext> {
        if patch_mask.len() != batch * fh * fw || fh == 0 || fw == 0 {
            return Err(Error::Shape {
                op: "SparseContext::hierarchical",
                msg: format!(
                    "patch mask has {} elements, expected batch*fh*fw = {batch}*{fh}*{fw} (fh, fw >= 1)",
                    patch_mask.len()
                ),
            });
        }
        Ok(Self::with_mode(Mode::Hierarchical { patch: patch_mask.to_vec(), batch, fh, fw }))
    }

    /// For sparse inputs beyond SparK: strided ops dilate the active set by their window.
    pub fn generic() -> SparseContext {
        Self::with_mode(Mode::Generic)
    }

    fn with_mode(mode: Mode) -> SparseContext {
        SparseContext { mode, sets: HashMap::new(), derived: HashMap::new(), maps: HashMap::new() }
    }

    pub fn is_hierarchical(&self) -> bool {
        matches!(self.mode, Mode::Hierarchical { .. })
    }

    /// The active set at resolution (h, w), built once and cached. Hierarchical mode errors when
    /// the patch grid does not divide (h, w); generic mode returns a set registered earlier
    /// (`register`, or the output of a strided op) and errors otherwise.
    pub fn active_set(&mut self, batch: usize, h: usize, w: usize) -> Result<Arc<ActiveSet>> {
        if let Some(s) = self.sets.get(&(batch, h, w)) {
            return Ok(s.clone());
        }
        let set = match &self.mode {
            Mode::Hierarchical { patch, batch: pb, fh, fw } => {
                if batch != *pb {
                    return Err(Error::Shape {
                        op: "SparseContext::active_set",
                        msg: format!("batch {batch} differs from the patch mask's batch {pb}"),
                    });
                }
                if !h.is_multiple_of(*fh) || !w.is_multiple_of(*fw) || h == 0 || w == 0 {
                    return Err(Error::Shape {
                        op: "SparseContext::active_set",
                        msg: format!(
                            "mask does not divide the feature map: patch grid {fh}x{fw} vs feature map {h}x{w}"
                        ),
                    });
                }
                Arc::new(ActiveSet::from_patch_mask_scaled(patch, batch, *fh, *fw, h / fh, w / fw)?)
            }
            Mode::Generic => {
                return Err(Error::Msg(format!(
                    "SparseContext::active_set: no active set registered at {batch}x{h}x{w} in a generic context \
                     (register one, or derive it with a strided op)"
                )))
            }
        };
        self.sets.insert((batch, h, w), set.clone());
        Ok(set)
    }

    /// Makes `set` the context's set at its resolution (replacing any earlier one).
    pub fn register(&mut self, set: Arc<ActiveSet>) {
        self.sets.insert((set.batch(), set.h(), set.w()), set);
    }

    /// Output sites of a conv/pool with window `geom` on `input`. Stride 1 with an output of the
    /// input's size is submanifold (output sites = input sites); otherwise hierarchical mode
    /// takes the mask at the output resolution and generic mode dilates `input` by the window.
    pub fn output_set(&mut self, input: &Arc<ActiveSet>, geom: KernelGeom) -> Result<Arc<ActiveSet>> {
        let (oh, ow) = geom.out_size("SparseContext::output_set", input.h(), input.w())?;
        if geom.stride == [1, 1] && (oh, ow) == (input.h(), input.w()) {
            return Ok(input.clone());
        }
        if self.is_hierarchical() {
            return self.active_set(input.batch(), oh, ow);
        }
        if let Some(s) = self.derived.get(&(input.id(), geom)) {
            return Ok(s.clone());
        }
        let mut mask = vec![false; input.batch() * oh * ow];
        for &[b, iy, ix] in input.coords() {
            for ky in 0..geom.kernel[0] {
                let Some(oy) = out_of(iy, ky, geom, 0, oh) else { continue };
                for kx in 0..geom.kernel[1] {
                    if let Some(ox) = out_of(ix, kx, geom, 1, ow) {
                        mask[(b * oh + oy) * ow + ox] = true;
                    }
                }
            }
        }
        let set = Arc::new(ActiveSet::from_mask(&mask, input.batch(), oh, ow)?);
        self.derived.insert((input.id(), geom), set.clone());
        self.sets.entry((input.batch(), oh, ow)).or_insert_with(|| set.clone());
        Ok(set)
    }

    /// The kernel map between two sets, built once per (input, output, geometry).
    pub fn kernel_map(
        &mut self,
        input: &Arc<ActiveSet>,
        output: &Arc<ActiveSet>,
        geom: KernelGeom,
    ) -> Result<Arc<KernelMap>> {
        let key = (input.id(), output.id(), geom);
        if let Some(m) = self.maps.get(&key) {
            return Ok(m.clone());
        }
        let m = Arc::new(KernelMap::build(input, output, geom)?);
        self.maps.insert(key, m.clone());
        Ok(m)
    }

    /// Number of cached kernel maps (tests check that layers share them).
    pub fn num_kernel_maps(&self) -> usize {
        self.maps.len()
    }

    /// Drops the cached kernel maps and derived sets (keeps the policy and the patch mask).
    pub fn clear(&mut self) {
        self.sets.clear();
        self.derived.clear();
        self.maps.clear();
    }
}

fn out_of(i: usize, k: usize, g: KernelGeom, a: usize, out: usize) -> Option<usize> {
    let t = (i + g.padding[a]).checked_sub(k * g.dilation[a])?;
    if t % g.stride[a] != 0 {
        return None;
    }
    let o = t / g.stride[a];
    (o < out).then_some(o)
}

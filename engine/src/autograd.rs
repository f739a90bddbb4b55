//! Reverse-mode automatic differentiation over the dynamic graph.
//!
//! Every tensor made by a differentiable op while gradients are enabled remembers the op and its
//! inputs (`Node`). `Tensor::backward` walks that graph in reverse topological order and calls
//! each op's `backward`, which is itself written with tensor ops (run under `no_grad`). Only the
//! gradients of leaf variables are kept in the returned `GradStore`; intermediate gradients are
//! dropped as soon as they have been propagated.
//!
//! The `Op` trait is public so that other crates (spark-sparse) add ops with their own backward.

use crate::{Error, Result, Tensor, TensorId};
use std::cell::Cell;
use std::collections::HashMap;

/// A differentiable operation. The forward pass is done by whoever builds the output tensor
/// (with `Tensor::from_op`); the op object keeps what backward needs beyond the inputs.
pub trait Op: Send + Sync {
    /// Short name for error messages and graph dumps.
    fn name(&self) -> &'static str;

    /// Given the gradient of the loss w.r.t. `output`, returns one gradient per input (in the
    /// order of `inputs`), or `None` where an input gets no gradient. Shapes must equal the
    /// inputs' shapes.
    fn backward(&self, inputs: &[Tensor], output: &Tensor, grad_out: &Tensor) -> Result<Vec<Option<Tensor>>>;
}

/// The op that produced a tensor, with its inputs.
pub struct Node {
    pub(crate) op: Box<dyn Op>,
    pub(crate) inputs: Vec<Tensor>,
}

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops on this thread record the graph.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Runs `f` without recording any graph (inference, optimizer updates, backward itself).
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _guard = NoGradGuard::new();
    f()
}

/// Disables graph recording until dropped.
pub struct NoGradGuard {
    prev: bool,
}

impl NoGradGuard {
    pub fn new() -> Self {
        let prev = GRAD_ENABLED.with(|g| g.replace(false));
        NoGradGuard { prev }
    }
}

impl Default for NoGradGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.prev));
    }
}

/// Gradients of leaf variables, keyed by tensor id.
#[derive(Default, Clone)]
pub struct GradStore {
    map: HashMap<TensorId, Tensor>,
}

impl GradStore {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn get(&self, t: &Tensor) -> Option<&Tensor> {
        self.map.get(&t.id())
    }
    pub fn get_id(&self, id: TensorId) -> Option<&Tensor> {
        self.map.get(&id)
    }
    pub fn insert(&mut self, t: &Tensor, grad: Tensor) {
        self.map.insert(t.id(), grad);
    }
    pub fn remove(&mut self, t: &Tensor) -> Option<Tensor> {
        self.map.remove(&t.id())
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    pub fn ids(&self) -> impl Iterator<Item = TensorId> + '_ {
        self.map.keys().copied()
    }
    /// Adds `grad` to the stored gradient of `id` (gradient accumulation).
    pub fn accumulate(&mut self, id: TensorId, grad: Tensor) -> Result<()> {
        match self.map.remove(&id) {
            Some(prev) => {
                let sum = crate::no_grad(|| prev.add(&grad))?;
                self.map.insert(id, sum);
            }
            None => {
                self.map.insert(id, grad);
            }
        }
        Ok(())
    }
    /// Adds every gradient of `other` into this store.
    pub fn merge(&mut self, other: GradStore) -> Result<()> {
        for (id, g) in other.map {
            self.accumulate(id, g)?;
        }
        Ok(())
    }
}

/// Tensors reachable from `root` through recorded ops, in topological order (inputs first).
fn topo_order(root: &Tensor) -> Vec<Tensor> {
    let mut order = Vec::new();
    let mut visited: HashMap<TensorId, ()> = HashMap::new();
    // Iterative post-order DFS: (tensor, children pushed?)
    let mut stack: Vec<(Tensor, bool)> = vec![(root.clone(), false)];
    while let Some((t, expanded)) = stack.pop() {
        if expanded {
            order.push(t);
            continue;
        }
        if visited.insert(t.id(), ()).is_some() {
            continue;
        }
        let node = t.node().cloned();
        stack.push((t, true));
        if let Some(node) = node {
            for inp in node.inputs.iter().rev() {
                if inp.requires_grad() && !visited.contains_key(&inp.id()) {
                    stack.push((inp.clone(), false));
                }
            }
        }
    }
    order
}

pub(crate) fn backward_into(root: &Tensor, seed: Tensor, store: &mut GradStore) -> Result<()> {
    if !root.requires_grad() {
        return Err(Error::Autograd(format!(
            "backward on a tensor of shape {:?} that does not require grad (no variable in its graph, or built under no_grad)",
            root.dims()
        )));
    }
    let _guard = NoGradGuard::new();
    let order = topo_order(root);
    let mut pending: HashMap<TensorId, Tensor> = HashMap::new();
    pending.insert(root.id(), seed);
    for t in order.iter().rev() {
        let Some(grad) = pending.remove(&t.id()) else { continue };
        match t.node() {
            None => store.accumulate(t.id(), grad)?,
            Some(node) => {
                let key = || format!("{} -> {:?}", node.op.name(), t.dims());
                let grads = crate::profile::timed(key, || node.op.backward(&node.inputs, t, &grad))?;
                if grads.len() != node.inputs.len() {
                    return Err(Error::Autograd(format!(
                        "op {} returned {} gradients for {} inputs",
                        node.op.name(),
                        grads.len(),
                        node.inputs.len()
                    )));
                }
                for (inp, g) in node.inputs.iter().zip(grads) {
                    let Some(g) = g else { continue };
                    if !inp.requires_grad() {
                        continue;
                    }
                    if g.dims() != inp.dims() {
                        return Err(Error::Autograd(format!(
                            "op {} produced a gradient of shape {:?} for an input of shape {:?}",
                            node.op.name(),
                            g.dims(),
                            inp.dims()
                        )));
                    }
                    match pending.remove(&inp.id()) {
                        Some(prev) => {
                            let key = || format!("accumulate grad {:?}", g.dims());
                            pending.insert(inp.id(), crate::profile::timed(key, || prev.add(&g))?);
                        }
                        None => {
                            pending.insert(inp.id(), g);
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

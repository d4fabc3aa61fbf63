"""Mixed precision (`config.precision='bfloat16'`).

bfloat16 computes activations and matmuls in bfloat16 while parameters, optimiser state, losses
and metrics stay float32 (docs/training.md). For early fusion and MMIN (their `:smoke` configs)
and M3ER (its `:smoke` config on the contract tests' toy feature directory), with the same seed,
parameters and batches in both precisions, these tests check:

* the loss at the same parameters (the first step's): within 1e-2 relative of float32's.
  bfloat16 keeps 8 significant bits (unit roundoff 2^-9 ~ 2e-3); measured, the batch loss moves
  by <= 2e-3 relative (every method, the contract's toy configs too), so 1e-2 is a 5-20x margin
  that still catches a layer left in a wrong dtype (a bfloat16 softmax or loss reduction).
* a 10-step training trajectory: every step's loss within 5e-2 relative of float32's. A
  trajectory cannot be held to the same-parameter tolerance: small-batch Adam amplifies any
  perturbation of that size step by step (its first updates are about lr * sign(g), which a
  rounding error flips where g is small). Measured on early fusion, a float32 run merely started
  from the same parameters rounded to bfloat16 drifts from the float32 run by up to 4% within 10
  steps (11% within 20); the bfloat16 runs drift by up to 2.4% (early fusion), 3.7% (MMIN,
  whose bfloat16 teacher also fits its own tables) and 1% (M3ER). 5e-2 is that float32
  sensitivity; a real precision bug (a bfloat16 loss, a lost cast) breaks the first bound.
* that the bfloat16 models really compute in bfloat16 (the jaxpr's matmuls and convolutions),
  that every parameter and optimiser-state leaf stays float32, and losses are float32.

Plus: `--mode=gradcheck` ignores precision=bfloat16 and checks in float64; an unknown precision
is a ValueError naming `config.precision`. (The traced-rate `layers.Dropout`: test_layers.py.)
"""

from __future__ import annotations

import copy
import os

from jax.extend import core as jcore
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import fusion_iemocap
from configs import m3er_iemocap
from configs import mmin_iemocap
from mmer_jax import gradcheck
from mmer_jax import methods
from mmer_jax import stages
from mmer_jax import train
from mmer_jax.methods import mmin as mmin_method
import toy_data

STEPS = 10
SAME_PARAMS_RTOL = 1e-2
TRAJECTORY_RTOL = 5e-2


def _toy(config, data_dir: str):
  """`config` on the contract tests' small toy feature directory (audio sequences, text vectors)
  instead of its synthetic release: the same method, less to compile."""
  config.data.features_dir = str(toy_data.write_features_dir(os.path.join(data_dir, 'toy'), n=48,
                                                             classes=4))
  config.data.options = ml_collections.ConfigDict()
  return config


def _mmin_config(data_dir):
  config = mmin_iemocap.get_config('smoke')
  config.method.cra.num_blocks = 2  # fewer layers to compile; the same kinds of layer
  return config


CONFIGS = {'early_fusion': lambda data_dir: fusion_iemocap.get_config('smoke'), 'mmin': _mmin_config,
           'm3er': lambda data_dir: _toy(m3er_iemocap.get_config('smoke'), data_dir)}


def _with_precision(config, precision):
  config = copy.deepcopy(config)
  with config.unlocked():
    config.precision = precision
  return config


def _matmul_dtypes(fn, *args) -> tuple[dict[str, int], list]:
  """({dtype: count} of the operands of every dot_general and convolution in fn's jaxpr, the
  shapes and dtypes of fn's outputs), from one trace."""
  counts: dict[str, int] = {}

  def visit(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name in ('dot_general', 'conv_general_dilated'):
        dtype = str(eqn.invars[0].aval.dtype)
        counts[dtype] = counts.get(dtype, 0) + 1
      for value in eqn.params.values():
        for sub in value if isinstance(value, (list, tuple)) else [value]:
          if isinstance(sub, jcore.ClosedJaxpr):
            visit(sub.jaxpr)
          elif isinstance(sub, jcore.Jaxpr):
            visit(sub)

  closed = jax.make_jaxpr(fn)(*args)
  visit(closed.jaxpr)
  return counts, closed.out_avals


def _leaf_dtypes(tree) -> set[str]:
  return {str(x.dtype) for x in jax.tree_util.tree_leaves(tree) if hasattr(x, 'dtype')}


def _trajectory(run, params, batches):
  """The step losses of training from `params` on `batches`, the last metrics and state."""
  state = run.to_devices(run.init_state(jax.tree_util.tree_map(jnp.array, params)))
  losses = []
  for batch in batches:
    state, metrics = run.train_step(state, run.place(batch))
    losses.append(float(metrics['loss']))
  return np.array(losses), jax.device_get(metrics), run.from_devices(state)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  """One data_dir for the module: the smoke sets are built once."""
  return str(tmp_path_factory.mktemp('data'))


# M3ER's case with -m slow (early fusion and MMIN keep the mechanism in the default run).
@pytest.mark.parametrize('name', [pytest.param(n, marks=pytest.mark.slow) if n == 'm3er' else n
                                  for n in CONFIGS])
def test_bfloat16_follows_float32(name, data_dir):
  config = CONFIGS[name](data_dir)
  config.data.data_dir = data_dir
  config = stages.main_stage(config)
  run32 = train.Run(_with_precision(config, 'float32'), devices=jax.devices()[:1])
  run16 = train.Run(_with_precision(config, 'bfloat16'), devices=jax.devices()[:1],
                    dataset=run32.dataset)
  assert run32.method.dtype is None and run16.method.dtype == jnp.bfloat16
  batches = []
  epoch = 0
  while len(batches) < STEPS:
    batches += list(run32.train_batches(epoch))
    epoch += 1
  batches = batches[:STEPS]
  params32 = jax.device_get(run32.init_params())
  params16 = params32
  if name == 'mmin':  # the teacher tables fitted by the bfloat16 teacher are float32 too
    base = {k: v for k, v in params32.items() if k != mmin_method.TABLES}
    params16 = jax.device_get(run16.method.fit(base, run16.eval_batches('train')))
    for table, ref in zip(jax.tree_util.tree_leaves(params16[mmin_method.TABLES]),
                          jax.tree_util.tree_leaves(params32[mmin_method.TABLES])):
      assert table.dtype == np.float32
      np.testing.assert_allclose(table, ref, atol=2e-2 * float(np.abs(ref).max()))
  assert jax.tree_util.tree_structure(params16) == jax.tree_util.tree_structure(params32)
  assert _leaf_dtypes(params16) == {'float32'}

  # The bfloat16 model computes its products in bfloat16 and returns float32 losses (the
  # per-example loss and aux terms) and predictions (traced, not compiled).
  batch, rng = batches[0], jax.random.PRNGKey(1)
  dots16, outputs16 = _matmul_dtypes(run16.method.loss, params16, batch, rng)
  assert dots16.get('bfloat16', 0) >= 0.9 * sum(dots16.values()), dots16
  assert {str(x.dtype) for x in outputs16} == {'float32'}
  assert jax.eval_shape(run16.method.predict, params16, batch, rng).dtype == jnp.float32

  # Ten training steps from the same parameters on the same batches. The first step's loss is
  # the loss at the same parameters; the trajectories stay together; the state stays float32.
  losses32, _, _ = _trajectory(run32, params32, batches)
  losses16, metrics16, state16 = _trajectory(run16, params16, batches)
  drift = np.abs(losses16 - losses32) / np.abs(losses32)
  assert drift[0] <= SAME_PARAMS_RTOL, (losses32, losses16)
  assert drift.max() <= TRAJECTORY_RTOL, (losses32, losses16)
  assert _leaf_dtypes(metrics16) == {'float32'}
  assert _leaf_dtypes(state16.params) == {'float32'}
  assert _leaf_dtypes(state16.opt_state) <= {'float32', 'int32'}


def test_an_unknown_precision_is_refused():
  config = fusion_iemocap.get_config('smoke')
  config.precision = 'float16'
  with pytest.raises(ValueError, match=r'config\.precision.*early_fusion'):
    methods.create_method(config, None)


def test_gradcheck_ignores_bfloat16_and_checks_in_float64(data_dir):
  config = _toy(fusion_iemocap.get_config('smoke'), data_dir)
  config.data.data_dir = data_dir
  config.method.encoders.embed_dim = config.method.encoders.num_filters = 4
  config.method.head.hidden = (4,)
  config.precision = 'bfloat16'
  report = gradcheck.run(config)
  assert report['dtype'] == 'float64' and report['precision_ignored'] == 'bfloat16'
  assert report['ok'], gradcheck.format_report(report)
  assert 'config.precision=bfloat16 ignored' in gradcheck.format_report(report)

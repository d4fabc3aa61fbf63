"""`--mode=gradcheck` on the baselines: the full training loss against finite differences."""

import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


_SMALL_ENCODERS = ['--config.method.encoders.embed_dim=8', '--config.method.encoders.num_filters=4']
_SMALL_FUSION = [*_SMALL_ENCODERS, '--config.method.head.hidden=(8,)']
_SMALL_BCLSTM = ['--config.method.utterance_dim=8', '--config.method.lstm_hidden=4',
                 '--config.method.dense_dim=8']


# With -m slow, to keep the default run within CI's time: early and late fusion (MMIN's check
# covers the same encoders and a fusion classifier; the wrong-gradient test runs early fusion's)
# and bc-LSTM (its network is also checked in tests/test_models.py).
@pytest.mark.parametrize('config,method,small', [
    pytest.param('fusion_iemocap', 'early_fusion', _SMALL_FUSION, marks=pytest.mark.slow),
    pytest.param('fusion_iemocap', 'late_fusion', _SMALL_FUSION, marks=pytest.mark.slow),
    ('fusion_mosi', 'gated_attention', _SMALL_FUSION),
    pytest.param('bclstm_meld', 'bclstm', _SMALL_BCLSTM, marks=pytest.mark.slow),
    ('mmin_iemocap', 'mmin', [*_SMALL_FUSION, '--config.method.cra.num_blocks=2',
                              '--config.method.cra.layers=(16,8,4)', '--config.method.classifier.hidden=(8,)']),
])
def test_gradcheck_mode_passes_on_baselines(config, method, small, tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'mmer_jax.main', f'--config=configs/{config}.py:smoke', '--mode=gradcheck',
       f'--config.method.name={method}', f'--config.data.data_dir={tmp_path / "data"}',
       '--config.train.missing=patterns', f'--workdir={tmp_path / "run"}', *small],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  lines = [l.split() for l in proc.stdout.splitlines()]
  lines = [l for l in lines if len(l) == 4 and l[3] in ('yes', 'NO')]
  assert lines, proc.stdout
  for name, size, rel, ok in lines:
    assert float(rel) < 1e-4 and ok == 'yes', (name, rel)
  assert 'gradcheck passed' in proc.stdout


def test_gradcheck_detects_a_wrong_gradient(tmp_path, monkeypatch):
  """A loss whose custom derivative is wrong must fail the check (the check can fail)."""
  import jax
  import jax.numpy as jnp
  from mmer_jax import gradcheck

  @jax.custom_jvp
  def bad_square(x):
    return x * x

  @bad_square.defjvp
  def _(primals, tangents):  # the true derivative is 2x
    (x,), (t,) = primals, tangents
    return x * x, 3.0 * x * t
  from mmer_jax.methods import baselines
  original = baselines.base.supervised_loss

  def broken(task, outputs, label):
    loss, aux = original(task, outputs, label)
    return bad_square(loss), aux

  monkeypatch.setattr(baselines.base, 'supervised_loss', broken)
  sys.path.insert(0, str(REPO))
  from configs import fusion_iemocap
  config = fusion_iemocap.get_config('smoke')
  config.data.data_dir = str(tmp_path / 'data')
  config.method.encoders.embed_dim, config.method.encoders.num_filters = 8, 4
  config.method.head.hidden = (8,)
  report = gradcheck.run(config)
  assert not report['ok']
  assert max(r['rel_error'] for r in report['groups'].values()) > 0.1
  del jnp

"""One device, sharded jit over 8 and pmap over 8 host CPU devices give the same training run.

Utterance batches (early fusion, complete data and random modality patterns) and dialogue graph
batches (MMGCN with its jraph edge list: one graph per device, `data/graphs.py`; random modality
patterns, i.e. absent nodes)."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

_SCRIPT = textwrap.dedent('''
    import json, sys
    import jax
    import ml_collections
    import numpy as np
    sys.path.insert(0, {repo!r}); sys.path.insert(0, {tests!r})
    from configs import fusion_iemocap
    from configs import mmgcn_iemocap
    from mmer_jax import train
    import toy_data

    toy = toy_data.write_features_dir({tmp!r} + '/toy', n=160)
    toy_dialogues = toy_data.write_features_dir({tmp!r} + '/toy_dialogues', n=320, dialogues=True)
    assert len(jax.devices()) == 8, jax.devices()

    def fusion_config():
      config = fusion_iemocap.get_config()
      config.data.features_dir = str(toy)
      config.data.batch_size = 16
      config.data.eval_batch_size = 16
      config.method.head.dropout = 0.0
      config.method.encoders.dropout = 0.0
      config.method.encoders.embed_dim = 16
      config.method.encoders.num_filters = 8
      config.method.head.hidden = (16,)
      return config

    def mmgcn_config():
      config = mmgcn_iemocap.get_config()
      config.data.features_dir = str(toy_dialogues)
      config.data.options = ml_collections.ConfigDict()
      config.data.batch_size = 8  # dialogues: one per device
      config.data.eval_batch_size = 8
      config.data.buckets = (4,)
      config.method.dropout = 0.0
      config.method.width = 8
      config.method.gcn_hidden = 8
      config.method.num_layers = 3
      config.method.message_passing = 'edges'  # graph batches (blocks need none: contract test)
      config.analysis = ()
      return config

    def trajectory(make_config, parallel, devices, missing):
      config = make_config()
      config.data.data_dir = {tmp!r} + '/data'
      config.data.prefetch = 0
      config.train.missing = missing
      config.optimizer.learning_rate = 1e-2
      config.parallel = parallel
      run = train.Run(config, devices=devices)
      state = run.to_devices(run.init_state())
      losses = []
      for epoch in range(2):
        for batch in run.streams.epoch('train', epoch, train=True):
          state, metrics = run.train_step(state, run.place(batch))
          metrics = jax.device_get(metrics)
          loss = np.asarray(metrics['loss']).reshape(-1)[0]
          losses.append(float(loss))
      params = run.from_devices(state).params
      out = run.predict(run.device_params(params), next(iter(run.streams.epoch('test', train=False))))
      return losses, np.asarray(out).tolist()

    result = {{}}
    for name, make_config, modes in (('fusion', fusion_config, ('none', 'patterns')),
                                     ('mmgcn', mmgcn_config, ('patterns',))):
      for missing in modes:
        result[name + '/' + missing] = {{
            'single': trajectory(make_config, 'jit', jax.devices()[:1], missing),
            'jit': trajectory(make_config, 'jit', jax.devices(), missing),
            'pmap': trajectory(make_config, 'pmap', jax.devices(), missing),
        }}
    print('RESULT' + json.dumps(result))
''')


@pytest.fixture(scope='module')
def trajectories(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('parallel')
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8', JAX_PLATFORMS='cpu')
  script = _SCRIPT.format(repo=str(REPO), tests=str(REPO / 'tests'), tmp=str(tmp))
  proc = subprocess.run([sys.executable, '-c', script], env=env, capture_output=True, text=True,
                        timeout=600, cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-4000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith('RESULT')][0]
  return json.loads(line[len('RESULT'):])


@pytest.mark.parametrize('method,missing', [('fusion', 'none'), ('fusion', 'patterns'), ('mmgcn', 'patterns')])
@pytest.mark.parametrize('parallel', ['jit', 'pmap'])
def test_data_parallel_matches_single_device(trajectories, method, missing, parallel):
  import numpy as np
  single_loss, single_out = trajectories[method + '/' + missing]['single']
  loss, out = trajectories[method + '/' + missing][parallel]
  assert len(loss) == len(single_loss) >= 10
  np.testing.assert_allclose(loss, single_loss, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out, single_out, rtol=1e-4, atol=1e-4)
  assert single_loss[-1] < single_loss[0], 'the run learns'

"""Every config file loads, locks and names what it runs; every `:smoke` variant trains end to end."""

import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (REPO / 'configs').glob('*.py') if p.name not in ('default.py', '__init__.py'))


def _load(path):
  sys.path.insert(0, str(REPO))
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_config_loads_locks_and_documents_its_command(path):
  module = _load(path)
  assert module.__doc__.strip().startswith('python -m mmer_jax.main --config=configs/' + path.name), \
      'the docstring starts with the command that runs it'
  for arg in (None, 'synthetic', 'smoke'):
    config = module.get_config(arg)
    config.lock()
    assert config.method.name
    with pytest.raises(AttributeError):
      config.not_a_field = 1  # locked: typos fail loudly
    assert config.data.name.startswith('synthetic/') == (arg is not None)
  with pytest.raises(ValueError, match='variant'):
    module.get_config('nonsense')


# One smoke run per method in the default run; the others with -m slow. IMDer's take minutes
# (compiling its score U-Nets): its contract case and tests/test_imder_method.py keep it in the
# default run. A method's second config runs the same code on another dataset's layout; the
# default run keeps one regression config (m3er_mosei); features directories: test_real_features.
SLOW_SMOKE = ('imder_mosei', 'imder_mosi', 'mmgcn_meld', 'mmin_msp_improv', 'bclstm_meld',
              'fusion_mosi', 'm3er_iemocap', 'fusion_features')


@pytest.mark.parametrize('path', [pytest.param(p, marks=pytest.mark.slow) if p.stem in SLOW_SMOKE
                                  else p for p in CONFIGS], ids=lambda p: p.stem)
def test_smoke_variant_trains_and_writes_results(path, tmp_path):
  workdir = tmp_path / 'run'
  proc = subprocess.run(
      [sys.executable, '-m', 'mmer_jax.main', f'--config=configs/{path.name}:smoke',
       f'--workdir={workdir}', f'--config.data.data_dir={tmp_path / "data"}'],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  results = json.loads((workdir / 'results.json').read_text())
  assert results['split'] == 'test' and results['rows'][0]['condition'] == 'full'
  conditions = [r['condition'] for r in results['rows']]
  assert {'full', 'a', 'v', 't', 'av', 'at', 'vt', 'rate=0.0', 'rate=0.7'} <= set(conditions)
  assert (workdir / 'results.md').exists() and (workdir / 'config.json').exists()
  ran = json.loads((workdir / 'config.json').read_text())  # the resolved config: what ran
  assert ran['resolved'] and results['train_missing'] == ran['train']['missing']
  final = workdir / ran['stage_name'] if ran['stages'] else workdir
  assert (final / 'metrics.jsonl').read_text().count('"step"') > 0
  assert any((final / 'tensorboard').iterdir())
  if path.stem.startswith('mmgcn'):  # the paper's picture: the adjacency around one utterance
    assert (workdir / 'mmgcn_adjacency.png').stat().st_size > 1000
  if path.stem.startswith('mmin'):  # both stages ran; the paper's picture: imagined vs. real
    assert ran['train']['missing'] == 'patterns' and list(ran['stages']) == ['stage1']
    assert json.loads((workdir / 'stage1' / 'results.json').read_text())['train_missing'] == 'none'
    assert (final / 'results.json').read_text() == (workdir / 'results.json').read_text()
    assert (final / 'imagination_pca_visual.png').stat().st_size > 1000
    imagination = json.loads((final / 'imagination_mse.json').read_text())  # the claim, measured
    assert set(imagination['conditions']) == {'a', 'v', 't', 'av', 'at', 'vt'}
    for c in imagination['conditions'].values():
      assert c['examples'] == 16 and c['mse']['imagined'] > 0 and c['mse']['train_mean'] > 0
      assert c['ratio_to_train_mean'] == c['mse']['imagined'] / c['mse']['train_mean']


def test_real_release_without_files_stops_with_instructions(tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'mmer_jax.main', '--config=configs/bclstm_iemocap.py',
       f'--workdir={tmp_path / "run"}', f'--config.data.data_dir={tmp_path / "data"}',
       f'--config.data.manual_dir={tmp_path / "empty"}'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert 'IEMOCAP_features.pkl' in proc.stderr and ':synthetic' in proc.stderr


def test_mmin_train_x4_variant_enlarges_only_the_training_split():
  from mmer_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  module = _load(REPO / 'configs' / 'mmin_iemocap.py')
  config = module.get_config('synthetic,train_x4')
  data = synthetic.create_config('iemocap_4', **config.data.options)
  default = synthetic.create_config('iemocap_4')
  assert dict(data.sizes) == {'train': 4 * dict(default.sizes)['train'],
                              'valid': dict(default.sizes)['valid'], 'test': dict(default.sizes)['test']}
  assert data.signal == default.signal and data.name != default.name  # its own TFDS config
  with pytest.raises(ValueError, match='synthetic'):
    module.get_config('train_x4')  # the real release has its own size


# `:cpu`, the laptop size: only the configs whose authors' scale takes more than about an hour on
# a 2-core CPU have one (configs/default.py `apply_variant`); the others say so when asked.
CPU_VARIANT = ('imder_mosi', 'imder_mosei')


@pytest.mark.parametrize('name', CPU_VARIANT)
def test_cpu_variant_sets_the_documented_fields_and_combines_with_synthetic(name):
  module = _load(REPO / 'configs' / f'{name}.py')
  authors, cpu = module.get_config('synthetic'), module.get_config('synthetic,cpu')
  cpu.lock()
  m = cpu.method
  assert (m.score_channels, m.score_attn_layers, m.refine_blocks) == ((32, 64), 1, 2)
  eval_steps = {'imder_mosi': 10, 'imder_mosei': 5}[name]  # MOSEI's test grid: docs/imder.md
  assert (m.train_sampler, m.train_num_steps, m.sampler, m.num_steps) == ('dpm_solver', 3,
                                                                          'dpm_solver', eval_steps)
  assert m.sampler_options.to_dict() == {}  # DPM-Solver's default: order 2
  assert cpu.train.valid_conditions == ('av', 'at', 'vt')
  assert cpu.data.name == authors.data.name == f'synthetic/{name.split("_")[1]}'
  # The method stays: every other method field, the optimiser and the stages are the authors'.
  shrunk = {'score_channels', 'score_attn_layers', 'refine_blocks', 'train_sampler',
            'train_num_steps', 'sampler', 'num_steps'}
  assert {k: v for k, v in m.to_dict().items() if k not in shrunk} == {
      k: v for k, v in authors.method.to_dict().items() if k not in shrunk}
  assert cpu.optimizer.to_dict() == authors.optimizer.to_dict()
  for field in ('stages', 'init_from', 'eval', 'data'):
    assert cpu[field].to_dict() == authors[field].to_dict(), field
  assert cpu.train.missing == authors.train.missing
  assert module.get_config('cpu,synthetic').to_dict() == cpu.to_dict()  # order does not matter
  assert module.get_config('cpu').data.name == name.split('_')[1]  # the release, laptop-sized
  assert ':synthetic,cpu' in module.__doc__


def test_cpu_variant_of_mosi_is_fifteen_epochs_per_stage():
  config = _load(REPO / 'configs' / 'imder_mosi.py').get_config('synthetic,cpu')
  assert config.train.num_epochs == 15 and config.train.max_steps is None
  assert 'num_epochs' not in config.stages.stage1.train  # stage 1 inherits the 15


def test_cpu_variant_of_mosei_caps_the_steps_of_each_stage():
  module = _load(REPO / 'configs' / 'imder_mosei.py')
  config = module.get_config('synthetic,cpu')
  assert config.data.batch_size == module.get_config('synthetic').data.batch_size == 128
  assert config.train.num_epochs == 1 and config.train.max_steps == module.CPU_STEPS < 128
  assert config.method.num_steps == module.CPU_EVAL_STEPS
  assert not {'num_epochs', 'max_steps'} & set(config.stages.stage1.train)  # stage 1 inherits
  assert config.train.checkpoint_every_steps <= 10  # an interrupted run resumes


@pytest.mark.parametrize('path', [p for p in CONFIGS if p.stem not in CPU_VARIANT],
                         ids=lambda p: p.stem)
def test_a_config_without_a_cpu_variant_says_it_needs_none(path):
  module = _load(path)
  with pytest.raises(ValueError, match=r'no cpu variant.*about \d+ minutes'):
    module.get_config('synthetic,cpu')
  assert 'minutes' in module.__doc__ and 'cpu' in module.__doc__  # the estimate, documented


def test_unknown_variant_is_an_error_that_lists_the_valid_ones():
  module = _load(REPO / 'configs' / 'imder_mosi.py')
  with pytest.raises(ValueError, match='synthetic, smoke, cpu'):
    module.get_config('synthetic,gpu')

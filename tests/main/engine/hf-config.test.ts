import { describe, expect, it } from 'vitest';
import { configToHf, parseHfConfig } from '../../../src/main/engine/hf-config';
import { UserError } from '../../../src/shared/errors';
import { tinyConfig } from '../../helpers/tiny-model';

const FILE = '/models/x/config.json';

/** config.json of Qwen2.5-0.5B-Instruct as published on the Hugging Face Hub, sizes shrunk. */
function qwen2Download(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    architectures: ['Qwen2ForCausalLM'],
    attention_dropout: 0.0,
    bos_token_id: 151643,
    eos_token_id: 151645,
    hidden_act: 'silu',
    hidden_size: 64,
    initializer_range: 0.02,
    intermediate_size: 128,
    max_position_embeddings: 32768,
    max_window_layers: 21,
    model_type: 'qwen2',
    num_attention_heads: 4,
    num_hidden_layers: 2,
    num_key_value_heads: 2,
    rms_norm_eps: 1e-6,
    rope_theta: 1000000.0,
    sliding_window: 32768,
    tie_word_embeddings: true,
    torch_dtype: 'bfloat16',
    transformers_version: '4.43.1',
    use_cache: true,
    use_sliding_window: false,
    vocab_size: 512,
    ...overrides,
  };
}

/** config.json of Llama 3.2 1B (rope_scaling llama3), sizes shrunk. */
function llama32Download(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'],
    attention_bias: false,
    bos_token_id: 128000,
    eos_token_id: 128001,
    head_dim: 16,
    hidden_act: 'silu',
    hidden_size: 64,
    intermediate_size: 128,
    max_position_embeddings: 131072,
    mlp_bias: false,
    model_type: 'llama',
    num_attention_heads: 4,
    num_hidden_layers: 2,
    num_key_value_heads: 2,
    pretraining_tp: 1,
    rms_norm_eps: 1e-5,
    rope_scaling: {
      factor: 32.0,
      high_freq_factor: 4.0,
      low_freq_factor: 1.0,
      original_max_position_embeddings: 8192,
      rope_type: 'llama3',
    },
    rope_theta: 500000.0,
    tie_word_embeddings: true,
    torch_dtype: 'bfloat16',
    use_cache: true,
    vocab_size: 512,
    ...overrides,
  };
}

function expectRejected(hf: Record<string, unknown>, pattern: RegExp, what: string): void {
  const parse = () => parseHfConfig(hf, FILE);
  expect(parse, `${what}: error class`).toThrow(UserError);
  expect(parse, `${what}: message`).toThrow(pattern);
}

describe('parseHfConfig', () => {
  it('reads a Qwen2 download', () => {
    const parsed = parseHfConfig(qwen2Download(), FILE);
    expect(parsed.config, 'config').toEqual({
      architecture: 'qwen2',
      vocabSize: 512,
      hiddenSize: 64,
      intermediateSize: 128,
      numLayers: 2,
      numHeads: 4,
      numKvHeads: 2,
      headDim: 16,
      ropeTheta: 1000000,
      rmsNormEps: 1e-6,
      maxPositions: 32768,
      tieWordEmbeddings: true,
      attentionBias: true,
    });
    expect(parsed.torchDtype, 'torch_dtype').toBe('bfloat16');
    expect(parsed.eosTokenId, 'eos_token_id').toBe(151645);
  });

  it('defaults Qwen2 attention bias to true', () => {
    expect(parseHfConfig(qwen2Download(), FILE).config.attentionBias, 'absent').toBe(true);
    const explicit = parseHfConfig(qwen2Download({ attention_bias: false }), FILE);
    expect(explicit.config.attentionBias, 'attention_bias false').toBe(false);
    const llama = parseHfConfig(llama32Download({ rope_scaling: null }), FILE);
    expect(llama.config.attentionBias, 'llama').toBe(false);
  });

  it('reads the transformers 5 dtype and rope_parameters keys', () => {
    const hf = qwen2Download({
      torch_dtype: undefined,
      dtype: 'float16',
      rope_theta: undefined,
      rope_parameters: { rope_type: 'default', rope_theta: 5000 },
    });
    const parsed = parseHfConfig(hf, FILE);
    expect(parsed.torchDtype, 'dtype').toBe('float16');
    expect(parsed.config.ropeTheta, 'rope_theta').toBe(5000);
  });

  it('takes the first of several eos_token_id values', () => {
    const parsed = parseHfConfig(
      llama32Download({ rope_scaling: null, eos_token_id: [7, 8] }),
      FILE,
    );
    expect(parsed.eosTokenId).toBe(7);
  });

  it('rejects rope_scaling', () => {
    expectRejected(
      llama32Download(),
      /config\.json: rope_scaling \{"factor":32.*"rope_type":"llama3"\} is not supported; the engine implements plain RoPE/,
      'llama3',
    );
    expectRejected(
      qwen2Download({ rope_scaling: { type: 'linear', factor: 2 } }),
      /rope_scaling \{"type":"linear","factor":2\} is not supported/,
      'linear',
    );
    expectRejected(
      qwen2Download({ rope_parameters: { rope_type: 'yarn', factor: 4, rope_theta: 1e6 } }),
      /rope_parameters \{"rope_type":"yarn".* is not supported/,
      'yarn in rope_parameters',
    );
  });

  it('accepts rope_scaling of the default type', () => {
    const parsed = parseHfConfig(qwen2Download({ rope_scaling: { rope_type: 'default' } }), FILE);
    expect(parsed.config.ropeTheta).toBe(1000000);
  });

  it('rejects other activations', () => {
    expectRejected(
      qwen2Download({ hidden_act: 'gelu' }),
      /config\.json: hidden_act "gelu" is not supported; the engine implements SwiGLU with silu/,
      'gelu',
    );
    const swish = parseHfConfig(qwen2Download({ hidden_act: 'swish' }), FILE);
    expect(swish.config.architecture, 'swish is silu').toBe('qwen2');
  });

  it('rejects Qwen2 sliding-window attention', () => {
    expectRejected(
      qwen2Download({ use_sliding_window: true }),
      /config\.json: use_sliding_window is true; the engine has no sliding-window attention/,
      'sliding window',
    );
  });

  it('rejects Llama mlp_bias', () => {
    expectRejected(
      llama32Download({ rope_scaling: null, mlp_bias: true }),
      /config\.json: mlp_bias is true/,
      'mlp_bias',
    );
  });

  it('rejects mistyped fields', () => {
    expectRejected(
      qwen2Download({ hidden_size: '64' }),
      /hidden_size is missing or not a number/,
      'hidden_size',
    );
    expectRejected(
      qwen2Download({ tie_word_embeddings: 'yes' }),
      /tie_word_embeddings must be true or false, got "yes"/,
      'tie_word_embeddings',
    );
    expectRejected(
      qwen2Download({ model_type: 'mistral' }),
      /model_type "mistral" is not supported/,
      'type',
    );
  });
});

describe('configToHf', () => {
  it('writes the keys transformers reads', () => {
    const llama = configToHf(tinyConfig(300), 299);
    expect(llama.architectures, 'architectures').toEqual(['LlamaForCausalLM']);
    expect(llama.torch_dtype, 'torch_dtype').toBe('float32');
    expect(llama.eos_token_id, 'eos').toBe(299);
    expect(llama.bos_token_id, 'no BOS is null, not the EOS id').toBeNull();
    expect(llama.rope_scaling, 'rope_scaling').toBeNull();
    expect(llama.mlp_bias, 'mlp_bias').toBe(false);
    const qwen = configToHf(tinyConfig(300, { architecture: 'qwen2', attentionBias: true }), 5, 4);
    expect(qwen.architectures, 'qwen2 architectures').toEqual(['Qwen2ForCausalLM']);
    expect(qwen.bos_token_id, 'qwen2 bos').toBe(4);
    expect(qwen.use_sliding_window, 'use_sliding_window').toBe(false);
  });

  it('parses back to the same config', () => {
    const variants = [
      tinyConfig(300),
      tinyConfig(300, { architecture: 'qwen2', attentionBias: false, tieWordEmbeddings: true }),
      tinyConfig(300, { attentionBias: true, ropeTheta: 500000 }),
    ];
    for (const config of variants) {
      const parsed = parseHfConfig(configToHf(config, 1), FILE);
      expect(parsed.config, JSON.stringify(config)).toEqual(config);
    }
  });
});

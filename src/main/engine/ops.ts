/**
 * Tensor operations with gradients that run fast on the wasm backend.
 *
 * Shapes: B batch, H heads, T positions, D model width, V vocabulary, N = B*T rows.
 * tfjs-backend-wasm 4.22 multiplies about 10x slower when `matMul` is given transpose flags
 * (272 ms against 25 ms for 2048x128 by 128x1000, measured on a 2-core x86_64 machine), and the
 * built-in gradient of matMul uses those flags. The gradient of `gather` needs the
 * UnsortedSegmentSum kernel, which wasm lacks. The custom gradients below transpose explicitly
 * and route embedding lookups through a one-hot product instead.
 */
import * as tf from '@tensorflow/tfjs';

function swapLastTwo(x: tf.Tensor): tf.Tensor {
  const perm = x.shape.map((_, i) => i);
  const r = perm.length;
  [perm[r - 2], perm[r - 1]] = [perm[r - 1], perm[r - 2]];
  return tf.transpose(x, perm);
}

/** Sums `grad` over leading axes so that it has `shape` (undoes matMul batch broadcasting). */
function reduceToShape(grad: tf.Tensor, shape: number[]): tf.Tensor {
  const extra = grad.rank - shape.length;
  let reduced = extra > 0 ? tf.sum(grad, [...Array(extra).keys()]) : grad;
  const axes: number[] = [];
  shape.forEach((size, i) => {
    if (size === 1 && reduced.shape[i] !== 1) axes.push(i);
  });
  if (axes.length > 0) reduced = tf.sum(reduced, axes, true);
  return reduced;
}

const matMulCustom = tf.customGrad((a, b, save) => {
  const at = a as tf.Tensor;
  const bt = b as tf.Tensor;
  (save as tf.GradSaveFunc)([at, bt]);
  return {
    value: tf.matMul(at, bt),
    gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
      const g = dy as tf.Tensor;
      const [sa, sb] = saved;
      const da = tf.matMul(g, swapLastTwo(sb));
      const db = tf.matMul(swapLastTwo(sa), g);
      return [reduceToShape(da, sa.shape), reduceToShape(db, sb.shape)];
    },
  };
});

/**
 * Multiplies `a @ b` (rank 2 to 4, batch dimensions broadcast) with a gradient that avoids
 * transpose flags. Same result as `tf.matMul(a, b)`.
 */
export function matMul<R extends tf.Rank>(a: tf.Tensor, b: tf.Tensor): tf.Tensor<R> {
  return matMulCustom(a, b) as tf.Tensor<R>;
}

/** `x @ w` for x [..., In] and w [In, Out]; flattens leading axes so the product is 2-D. */
export function linear(x: tf.Tensor, w: tf.Tensor2D, bias?: tf.Tensor1D): tf.Tensor {
  const inFeatures = x.shape[x.rank - 1];
  const lead = x.shape.slice(0, -1);
  const flat = tf.reshape(x, [-1, inFeatures]); // [N, In]
  let y = matMul(flat, w); // [N, Out]
  if (bias) y = tf.add(y, bias);
  return tf.reshape(y, [...lead, w.shape[1]]);
}

/** Looks up rows of `table` [V, D] for `ids` [B, T] through a one-hot product: [B, T, D]. */
export function embed(table: tf.Tensor2D, ids: tf.Tensor2D): tf.Tensor3D {
  const [batch, time] = ids.shape;
  const oneHot = tf.oneHot(tf.reshape(ids, [-1]) as tf.Tensor1D, table.shape[0]).toFloat(); // [N, V]
  return tf.reshape(matMul(oneHot, table), [batch, time, table.shape[1]]);
}

/** RMSNorm over the last axis: x / sqrt(mean(x^2) + eps) * weight. */
export function rmsNorm(x: tf.Tensor, weight: tf.Tensor1D, eps: number): tf.Tensor {
  const meanSquare = tf.mean(tf.square(x), -1, true);
  return tf.mul(tf.mul(x, tf.rsqrt(tf.add(meanSquare, eps))), weight);
}

/**
 * Constant matrix R [hd, hd] with x @ R = rotate_half(x) = concat(-x2, x1), the rotation used by
 * Hugging Face Llama's rotary embedding (halves, not interleaved pairs).
 */
export function rotateHalfMatrix(headDim: number): tf.Tensor2D {
  const half = headDim / 2;
  const values = new Float32Array(headDim * headDim);
  for (let i = 0; i < half; i++) {
    values[(i + half) * headDim + i] = -1; // output i takes -x[i + half]
    values[i * headDim + (i + half)] = 1; // output i + half takes x[i]
  }
  return tf.tensor2d(values, [headDim, headDim]);
}

/** cos and sin tables [positions, hd] for rotary embeddings with base `theta`. */
export function rotaryTables(positions: number, headDim: number, theta: number) {
  const half = headDim / 2;
  const cos = new Float32Array(positions * headDim);
  const sin = new Float32Array(positions * headDim);
  for (let p = 0; p < positions; p++) {
    for (let i = 0; i < half; i++) {
      const angle = p * theta ** (-(2 * i) / headDim);
      for (const j of [i, i + half]) {
        cos[p * headDim + j] = Math.cos(angle);
        sin[p * headDim + j] = Math.sin(angle);
      }
    }
  }
  return { cos, sin };
}

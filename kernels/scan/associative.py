"""Selective scan with `lax.associative_scan` over the whole sequence (log-depth, O(L N) memory).

Good where the sequence is short and the device is wide; on CPU it is slow (see the README).
Same core contract as `reference.scan_reference`.
"""

import jax
import jax.numpy as jnp

from fusionjax.kernels.scan.reference import discretize


def combine_affine(earlier, later):
  """Composes two affine maps h -> a*h + b, `earlier` applied first."""
  a_1, b_1 = earlier
  a_2, b_2 = later
  return a_1 * a_2, a_2 * b_1 + b_2


def scan_associative(u, delta, A, B, C, state0):
  """Selective scan by associative scan along L; shapes as in `reference`."""
  decay, drive = discretize(u, delta, A, B)  # (batch, L, G, Dg, N)
  drive = drive.at[:, 0].add(decay[:, 0] * state0)  # h[0] = decay[0] * state0 + drive[0]
  _, states = jax.lax.associative_scan(combine_affine, (decay, drive), axis=1)
  y = jnp.einsum("blgdn,blgn->blgd", states, C)
  return y, states[:, -1]

"""The dispatcher's per-step checks and pointer gathering, in C/C++: one pass over the tensors,
no Python per tensor.

Each step the fused path must confirm that its plan still describes ``optimizer.state`` (see
:mod:`optimlab.kernels`) and read every gradient's address. In Python that is a few hundred
nanoseconds of interpreter work per tensor per check, which on 4,000 small tensors costs more
than the update itself. The functions here do the same checks in one loop each. One source,
two builds:

* **C++ against torch's headers** (``c10/core/TensorImpl.h`` only: ~5 s to build, once per
  machine and torch): a plain tensor's fields (data address, numel, dtype, contiguity, layout,
  its gradient) are read from its ``TensorImpl`` with the calls torch's own getters make
  (``data_ptr()`` is ``mutable_data()``; ``p.grad`` is ``TensorImpl::grad()`` and, where the
  gradient already has its Python object and no torch-function mode is active, a new reference
  to that object, which is all the getter returns then), a few nanoseconds each instead of a
  Python call each. The objects are scattered and the step's data has just flushed the caches,
  so the loops prefetch: ``with_grads`` and ``gather`` the objects, ``TensorImpl`` s and
  storages of the tensors some way ahead; ``gather_own`` and the state check block by block,
  one link of every tensor's pointer chain per stage (see ``warm_state``). From 256 tensors on
  ``gather``'s two halves (the state dicts and counters; the parameters and gradients) run on
  two threads at once, and in ``gather_own`` the thread done with the state joins the other on
  the tensors' blocks (only reads; the caller holds the GIL and runs no Python meanwhile), where
  torch runs two or more. The layout this relies on (the
  Python tensor object is its header then one pointer to the ``TensorImpl``, ``at::Tensor`` is
  that one pointer) is checked at import against ``Tensor._cdata`` and ``p.grad._cdata``, and
  every read against Python's answer, before the build is used; anything else (a tensor
  subclass, a read that throws) is asked of Python as the C build does.
* **C on Python's C API only** (attribute reads and method calls on the tensors, exactly as the
  Python code makes them; torch's own C getters and methods called directly for plain tensors;
  no torch headers): used where the C++ build cannot be had (no C++ compiler, no torch headers,
  a failed import check; :data:`unavailable` says why; a C++ build that failed is noted beside
  the cache, ``optimlab_KEY.failed``, so later processes do not spend seconds failing again),
  and correct for any torch version.

The functions (both builds and :data:`python`, except where said):

``with_grads(params, complex, grads)``
    the parameters whose ``.grad`` is not None (their gradients appended to the list ``grads``),
    and flags: 1 some gradient ``is_sparse``, 2 some parameter ``is_complex()`` (looked at only
    when ``complex`` is true).
``same(a, b)``
    two sequences of the same length holding the same objects (``is``) in order.
``same_state(state, keys, values)``
    ``state`` (a dict) holds exactly ``keys`` -> ``values`` (by identity), in that order.
``gather(params, param_ptrs, sizes, dtype, dicts, values, value_ptrs, ptrs, at, grads, index)``
    the bucket's check: every parameter at its address; its gradient (``grads[index[t]]``, as
    ``with_grads`` collected them this step) a plain tensor of ``dtype``, contiguous, of its
    size (a sparse gradient fails the contiguity call, which is caught); each state dict holding
    exactly ``values`` (by identity, in order) and each of those tensors at its address in
    ``value_ptrs`` (0: not checked; the dispatcher checks the 0-dim counters) - which catches a
    storage swapped under one (``st["step"].set_(t)``, ``.data = t``). Writes the gradients'
    addresses to ``ptrs[at:at + n]`` and returns the gradients, or None on any mismatch (nothing
    else written).
``gather_own(params, param_ptrs, sizes, dtype, dicts, values, value_ptrs, ptrs, at)``
    ``gather``'s check with each gradient read from its own parameter (no ``grads`` list), each
    parameter also of ``dtype`` and its size; True or False (never an error for a tensor that does
    not fit). The C++ build reads the gradient's ``TensorImpl`` from the parameter's autograd
    metadata without making (or touching) a Python object for it - a gradient fresh from
    ``backward()`` has none - and answers False under a torch-function mode or for a tensor it
    cannot read (the caller then takes the way through ``with_grads`` and ``gather``). Not in the
    C build (it would ask Python's getter for each gradient, as ``with_grads`` does).
``listing(members, params, mask)``
    ``params`` (a group's list) holds exactly the tuple ``members`` in order, and each member's
    gradient is as ``mask`` (bytes) says: 0 none, 1 some, 2 not looked at (``gather_own`` checks
    it). C++ build and :data:`python` only, as ``gather_own``.
``recording()`` (C++ build only; :func:`recording` answers for every build)
    whether a RecordFunction callback (a profiler, an observer), a torch-function mode or a
    dispatch mode is active: where none is, torch's ``record_function`` records nothing and is
    not entered around a step (``optim``).
``same_bytes(a, b, nbytes)``, ``advance(address, n, double)``, ``fill(address, n, value, double)``
    the plan's 0-dim step / scalar-state buffers (CPU memory the plan owns): compare with what
    the plan last wrote, ``+= 1`` (as torch's ``buffer += 1`` in that dtype), and ``fill_``.

The module is compiled on first use by the system compiler and cached as the kernels are
(:func:`.cpu.obtain`: the same trusted folder, digest and key checks; the C++ build's key holds
torch's version and folder). Where neither build can be had (no compiler, no Python headers) or
``OPTIMLAB_NATIVE=0``, :mod:`optimlab.kernels` runs the same checks in Python (:data:`python`),
with the same results.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.machinery
import importlib.util
import inspect
import os
import sys
import sysconfig
import threading
import warnings
from array import array
from itertools import chain
from operator import attrgetter, is_
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import cpu

__all__ = ["module", "build", "enabled", "kind", "python", "recording", "switched_off", "unavailable"]

SOURCE = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#ifdef OPTIMLAB_TORCH
#include <c10/core/TensorImpl.h>
#include <c10/core/UndefinedTensorImpl.h>
#include <c10/core/impl/TorchDispatchModeTLS.h>
#include <atomic>
extern "C" const char KEY_SYMBOL[];  /* the key the build appends: exported, not a C++ const */
#endif

static PyObject *s_grad, *s_data_ptr, *s_dtype, *s_is_contiguous, *s_numel, *s_is_sparse, *s_is_complex;
static PyTypeObject *tensor_type, *parameter_type;
/* torch's own C descriptors of these names (the objects `Tensor.<name>` finds), or NULL: for a
   plain Tensor / Parameter they are called directly, which is what the attribute lookup would
   call, without the lookup */
static PyObject *d_grad, *d_data_ptr, *d_dtype, *d_is_contiguous, *d_numel, *d_is_sparse, *d_is_complex;

static inline int plain(PyObject *obj) {
    PyTypeObject *t = Py_TYPE(obj);
    return t == tensor_type || t == parameter_type;
}

#ifdef OPTIMLAB_TORCH
/* Built against torch's headers, a plain tensor's fields are read from its TensorImpl: torch's
   Python tensor object is the object header followed by its at::Tensor, one pointer to the
   TensorImpl (`struct variable`; the module's import checks this against `Tensor._cdata` and
   every read below against Python's answer before the module is used). The TensorImpl calls are
   the ones torch's own getters make (data_ptr() is mutable_data(); is_sparse, is_contiguous(),
   numel(), dtype), so the answers are the same; where one throws, the Python method is asked. */
struct variable { PyObject_HEAD c10::TensorImpl *impl; };

static inline c10::TensorImpl *impl_of(PyObject *obj) { return ((struct variable *)obj)->impl; }

/* Prefetching. The tensors' objects are scattered over the heap and the step's data has just
   flushed the caches, so each field read would wait for memory, one tensor after another; the
   loops below ask for tensor i + AHEAD's object, i + AHEAD / 2's TensorImpl, i + AHEAD / 4's
   storage, each stage reading only what the stage before brought in (prefetches never fault) */
#define AHEAD 16

/* one prefetch; the empty volatile asm is a side effect: GCC otherwise takes a function made only of
   prefetches for pure and drops its calls */
static inline void fetch(const void *address) {
    __builtin_prefetch(address);
    __asm__ __volatile__("");
}

static inline void prefetch_lines(const void *address, size_t bytes) {
    for (size_t at = 0; at < bytes; at += 64) fetch((const char *)address + at);
}

/* a TensorImpl's first cache line (virtual table, storage, autograd metadata, Python object) and
   its last (offset, numel, dtype, device, keys, flags) */
static inline void prefetch_fields(const c10::TensorImpl *impl) {
    fetch(impl);
    fetch((const char *)impl + sizeof(c10::TensorImpl) - 32);
    fetch((const char *)impl + sizeof(c10::TensorImpl) - 1);
}

static inline void prefetch_impl(PyObject *obj) {
    if (plain(obj)) prefetch_fields(impl_of(obj));
}

static inline void prefetch_storage(PyObject *obj) {
    if (plain(obj)) fetch(impl_of(obj)->unsafe_storage().unsafeGetStorageImpl());
}

/* a tuple's or list's items, as a plain pointer (ob_item is declared [1]: indexing it past 0
   from where the compiler can see that declaration lets it drop the prefetches as out of bounds) */
static inline PyObject *const *items_of(PyObject *seq) {
    PyObject *const *items = PySequence_Fast_ITEMS(seq);
    __asm__("" : "+r"(items));
    return items;
}

/* ahead of reading tensors items[i] (items[at[i]] where `at` is given; `want[i] == 0`: not read) */
static inline void ahead(PyObject *const *items, Py_ssize_t n, Py_ssize_t i, const int64_t *at, Py_ssize_t n_items,
                         const int64_t *want) {
    for (int stage = 1; stage <= 4; stage <<= 1) {
        Py_ssize_t j = i + AHEAD / stage;
        if (j >= n || (want != NULL && want[j] == 0)) continue;
        Py_ssize_t k = at == NULL ? j : at[j];
        if (k < 0 || k >= n_items) continue;
        if (stage == 1) fetch(items[k]);
        else if (stage == 2) prefetch_impl(items[k]);
        else prefetch_storage(items[k]);
    }
}

/* the TensorImpl of p.grad (the undefined tensor's where it has none): TensorImpl::grad(), which
   `p.grad` reads; at::Tensor is one pointer to its TensorImpl (checked at import against
   `p.grad._cdata`) */
static inline c10::TensorImpl *grad_impl(c10::TensorImpl *impl) {
    return *(c10::TensorImpl *const *)&impl->grad();
}

namespace at { namespace impl { bool torch_function_mode_enabled(); } }  /* (libtorch_cpu) */

/* p.grad for a plain p, as its getter answers it where that is only a new reference to the
   gradient's Python object: no torch-function mode active (`modes`: at::impl::
   torch_function_mode_enabled(), read once per call), a gradient, and a Python object for it
   (THPVariable_Wrap then returns Py_NewRef of it). NULL: ask the getter (no gradient: None and
   torch's non-leaf warning; no Python object yet: the getter makes one) */
static inline PyObject *grad_of(PyObject *p, int modes) {
    if (modes || !plain(p)) return NULL;
    try {
        c10::TensorImpl *g = grad_impl(impl_of(p));
        if (g == c10::UndefinedTensorImpl::singleton()) return NULL;
        PyObject *obj = g->pyobj_slot()->load_pyobj();
        if (obj != NULL) Py_INCREF(obj);
        return obj;
    } catch (...) {
        return NULL;
    }
}

/* ahead of reading params[i].grad: the parameter's object, TensorImpl, autograd metadata, its
   gradient's TensorImpl and Python object (that Python object is what the `grad` getter returns) */
static inline void ahead_grad(PyObject *const *items, Py_ssize_t n, Py_ssize_t i) {
    Py_ssize_t j;
    try {
    if ((j = i + AHEAD) < n) fetch(items[j]);
    if ((j = i + 3 * AHEAD / 4) < n) prefetch_impl(items[j]);
    if ((j = i + AHEAD / 2) < n && plain(items[j])) {
        c10::AutogradMetaInterface *meta = impl_of(items[j])->autograd_meta();
        if (meta != NULL) prefetch_lines(meta, 128);  /* where TensorImpl::grad() reads the gradient */
    }
    if ((j = i + AHEAD / 4) < n && plain(items[j])) prefetch_fields(grad_impl(impl_of(items[j])));
    if ((j = i + AHEAD / 8) < n && plain(items[j])) {
        PyObject *g = grad_impl(impl_of(items[j]))->pyobj_slot()->load_pyobj();
        if (g != NULL) fetch(g);
    }
    } catch (...) {  /* (only prefetches: nothing to undo) */
    }
}
#define AHEAD_GRAD(items, n, i) ahead_grad(items, n, i)
#define AHEAD_TENSOR(items, n, i, at, n_items, want) ahead(items, n, i, at, n_items, want)
#else
#define AHEAD_GRAD(items, n, i)
#define AHEAD_TENSOR(items, n, i, at, n_items, want)
#define items_of(seq) PySequence_Fast_ITEMS(seq)
#endif

#ifdef OPTIMLAB_TORCH
/* torch.dtype objects -> their TypeMeta (set_dtypes, from a tensor of each) */
#define MAX_DTYPES 64
static PyObject *dtype_objects[MAX_DTYPES];
static caffe2::TypeMeta dtype_metas[MAX_DTYPES];
static int n_dtypes;

static int meta_of(PyObject *dtype, caffe2::TypeMeta *meta) {
    for (int i = 0; i < n_dtypes; i++)
        if (dtype_objects[i] == dtype) { *meta = dtype_metas[i]; return 1; }
    return 0;
}

/* a gradient's check from its TensorImpl: 1 it holds (its address in *address), 0 it does not;
   throws where a read does */
static inline int impl_fits(c10::TensorImpl *impl, caffe2::TypeMeta meta, int64_t size, int64_t *address) {
    if (impl->dtype() != meta || impl->layout() != c10::kStrided) return 0;  /* sparse: no contiguity */
    if (!impl->is_contiguous() || impl->numel() != size) return 0;
    *address = (int64_t)(intptr_t)impl->mutable_data();
    return 1;
}

/* the same for a gradient's Python object: -1 ask Python where a read throws */
static int grad_fits(PyObject *g, caffe2::TypeMeta meta, int64_t size, int64_t *address) {
    try {
        return impl_fits(impl_of(g), meta, size, address);
    } catch (...) {
        return -1;
    }
}
#endif

/* obj.name() */
static PyObject *method0(PyObject *obj, PyObject *name) {
    PyObject *d = name == s_data_ptr ? d_data_ptr : name == s_numel ? d_numel
                : name == s_is_contiguous ? d_is_contiguous : name == s_is_complex ? d_is_complex : NULL;
    if (d != NULL && plain(obj)) return PyObject_Vectorcall(d, &obj, 1, NULL);
    return PyObject_CallMethodNoArgs(obj, name);
}

/* obj.name */
static PyObject *attr(PyObject *obj, PyObject *name) {
    PyObject *d = name == s_grad ? d_grad : name == s_dtype ? d_dtype : name == s_is_sparse ? d_is_sparse : NULL;
    if (d != NULL && plain(obj)) return Py_TYPE(d)->tp_descr_get(d, obj, (PyObject *)Py_TYPE(obj));
    return PyObject_GetAttr(obj, name);
}

/* obj.name() as an int64; -1 with an exception set on failure (check PyErr_Occurred) */
static int64_t call_int(PyObject *obj, PyObject *name) {
    PyObject *r = method0(obj, name);
    if (r == NULL) return -1;
    int64_t v = PyLong_AsLongLong(r);
    Py_DECREF(r);
    return v;
}

/* obj.name() as a truth value: 1, 0, or -1 with an exception set */
static int call_bool(PyObject *obj, PyObject *name) {
    PyObject *r = method0(obj, name);
    if (r == NULL) return -1;
    int v = PyObject_IsTrue(r);
    Py_DECREF(r);
    return v;
}

static int get_bool(PyObject *obj, PyObject *name) {
    PyObject *r = attr(obj, name);
    if (r == NULL) return -1;
    int v = PyObject_IsTrue(r);
    Py_DECREF(r);
    return v;
}

#ifdef OPTIMLAB_TORCH
/* a plain tensor's data_ptr() from its TensorImpl: 1 read into *address, 0 ask Python */
static inline int address_of(PyObject *obj, int64_t *address) {
    if (!plain(obj)) return 0;
    try {
        *address = (int64_t)(intptr_t)impl_of(obj)->mutable_data();
        return 1;
    } catch (...) {
        return 0;
    }
}
#endif

/* obj.data_ptr(); -1 with an exception set on failure */
static int64_t data_ptr_of(PyObject *obj) {
#ifdef OPTIMLAB_TORCH
    int64_t address;
    if (address_of(obj, &address)) return address;
#endif
    return call_int(obj, s_data_ptr);
}

/* obj.is_sparse (1, 0, -1 with an exception set) */
static int is_sparse_of(PyObject *obj) {
#ifdef OPTIMLAB_TORCH
    if (plain(obj)) return impl_of(obj)->is_sparse();
#endif
    return get_bool(obj, s_is_sparse);
}

/* obj.is_complex() (1, 0, -1 with an exception set) */
static int is_complex_of(PyObject *obj) {
#ifdef OPTIMLAB_TORCH
    if (plain(obj)) {
        try {
            return c10::isComplexType(impl_of(obj)->dtype().toScalarType());
        } catch (...) {
        }
    }
#endif
    return call_bool(obj, s_is_complex);
}

/* set_types(Tensor, Parameter, grad, data_ptr, dtype, is_contiguous, numel, is_sparse, is_complex):
   the descriptors are torch's C getters (grad, dtype, is_sparse) and methods, or None */
static PyObject *set_types(PyObject *self, PyObject *const *args, Py_ssize_t n) {
    if (n != 9 || !PyType_Check(args[0]) || !PyType_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "set_types(Tensor, Parameter, 7 descriptors or None)");
        return NULL;
    }
    for (int i = 2; i < 9; i++) {
        if (args[i] == Py_None) continue;
        int getter = i == 2 || i == 4 || i == 7;
        if (getter ? Py_TYPE(args[i])->tp_descr_get == NULL : !PyCallable_Check(args[i])) {
            PyErr_SetString(PyExc_TypeError, "set_types: not a descriptor");
            return NULL;
        }
    }
    PyObject **slots[9] = {(PyObject **)&tensor_type, (PyObject **)&parameter_type, &d_grad, &d_data_ptr,
                           &d_dtype, &d_is_contiguous, &d_numel, &d_is_sparse, &d_is_complex};
    for (int i = 0; i < 9; i++) {
        PyObject *value = args[i] == Py_None ? NULL : args[i];
        Py_XINCREF(value);
        Py_XSETREF(*slots[i], value);
    }
    Py_RETURN_NONE;
}

static PyObject *with_grads(PyObject *self, PyObject *const *args, Py_ssize_t n) {
    if (n != 3 || !PyList_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "with_grads(params, complex, grads: list)");
        return NULL;
    }
    int want_complex = PyObject_IsTrue(args[1]);
    if (want_complex < 0) return NULL;
    PyObject *grads = args[2];
    PyObject *seq = PySequence_Fast(args[0], "params must be a sequence");
    if (seq == NULL) return NULL;
    Py_ssize_t len = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
#ifdef OPTIMLAB_TORCH
    int modes = at::impl::torch_function_mode_enabled();
#endif
    PyObject *out = PyList_New(0);
    long flags = 0;
    if (out == NULL) goto fail;
    for (Py_ssize_t i = 0; i < len; i++) {
        AHEAD_GRAD(items, len, i);
#ifdef OPTIMLAB_TORCH
        PyObject *g = grad_of(items[i], modes);
        if (g == NULL) g = attr(items[i], s_grad);
#else
        PyObject *g = attr(items[i], s_grad);
#endif
        if (g == NULL) goto fail;
        if (g == Py_None) { Py_DECREF(g); continue; }
        if (!(flags & 1)) {
            int sparse = is_sparse_of(g);
            if (sparse < 0) { Py_DECREF(g); goto fail; }
            if (sparse) flags |= 1;
        }
        int appended = PyList_Append(grads, g);
        Py_DECREF(g);
        if (appended < 0) goto fail;
        if (want_complex && !(flags & 2)) {
            int c = is_complex_of(items[i]);
            if (c < 0) goto fail;
            if (c) flags |= 2;
        }
        if (PyList_Append(out, items[i]) < 0) goto fail;
    }
    Py_DECREF(seq);
    return Py_BuildValue("(Nl)", out, flags);
fail:
    Py_XDECREF(out);
    Py_DECREF(seq);
    return NULL;
}

static PyObject *same(PyObject *self, PyObject *const *args, Py_ssize_t n) {
    if (n != 2) { PyErr_SetString(PyExc_TypeError, "same(a, b)"); return NULL; }
    PyObject *a = PySequence_Fast(args[0], "a must be a sequence");
    if (a == NULL) return NULL;
    PyObject *b = PySequence_Fast(args[1], "b must be a sequence");
    if (b == NULL) { Py_DECREF(a); return NULL; }
    Py_ssize_t len = PySequence_Fast_GET_SIZE(a);
    int ok = len == PySequence_Fast_GET_SIZE(b);
    PyObject **x = PySequence_Fast_ITEMS(a), **y = PySequence_Fast_ITEMS(b);
    for (Py_ssize_t i = 0; ok && i < len; i++) ok = x[i] == y[i];
    Py_DECREF(a); Py_DECREF(b);
    return PyBool_FromLong(ok);
}

static PyObject *same_state(PyObject *self, PyObject *const *args, Py_ssize_t n) {
    if (n != 3 || !PyDict_Check(args[0]) || !PyTuple_Check(args[1]) || !PyTuple_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "same_state(dict, tuple, tuple)");
        return NULL;
    }
    PyObject *state = args[0];
    Py_ssize_t len = PyTuple_GET_SIZE(args[1]);
    if (PyDict_GET_SIZE(state) != len || PyTuple_GET_SIZE(args[2]) != len) Py_RETURN_FALSE;
    Py_ssize_t pos = 0, i = 0;
    PyObject *k, *v;
    while (PyDict_Next(state, &pos, &k, &v)) {
        if (i >= len || k != PyTuple_GET_ITEM(args[1], i) || v != PyTuple_GET_ITEM(args[2], i)) Py_RETURN_FALSE;
        i++;
    }
    return PyBool_FromLong(i == len);
}

#ifdef OPTIMLAB_TORCH
/* gather's two halves without a Python call, for two threads at once (the caller holds the GIL
   and runs no Python meanwhile; these only read): 1 the check holds, 0 it does not, -1 decide in
   gather's own loops (a tensor that is not plain, a TensorImpl read that throws), which make the
   same checks in the same order, so the answer (or the error) is the same */
/* Warming a block of tensors, stage by stage. Each tensor's fields lie at the end of a chain of
   pointers (object -> TensorImpl -> autograd metadata -> gradient's TensorImpl -> its storage),
   all out of the caches after the step's data went through. Following one tensor's chain at a
   time waits a memory latency per link; a loop that prefetches some tensors ahead still waits
   wherever a link arrives later than the loop needs it. Here each stage walks the whole block,
   issuing one link of every tensor's chain (independent loads, in flight together), and the
   next stage follows the links the previous one brought in: a block costs about one latency per
   link, whatever its size. Only prefetches and reads (a stage reads what the one before fetched). */
#define WARM_BLOCK 64

/* a block of state dicts (their objects and entry tables) and of the 0-dim values gather checks
   by address (`vptr[k] != 0`: objects, TensorImpls, storages) */
static void warm_state(PyObject *const *dict_items, Py_ssize_t t0, Py_ssize_t t1, PyObject *const *value_items,
                       Py_ssize_t k0, Py_ssize_t k1, const int64_t *vptr) {
    for (Py_ssize_t t = t0; t < t1; t++) fetch(dict_items[t]);
    for (Py_ssize_t k = k0; k < k1; k++) if (vptr[k] != 0) fetch(value_items[k]);
    for (Py_ssize_t t = t0; t < t1; t++)
        if (PyDict_Check(dict_items[t])) prefetch_lines(((PyDictObject *)dict_items[t])->ma_keys, 128);
    for (Py_ssize_t k = k0; k < k1; k++) if (vptr[k] != 0) prefetch_impl(value_items[k]);
    for (Py_ssize_t k = k0; k < k1; k++) if (vptr[k] != 0) prefetch_storage(value_items[k]);
}

static int state_holds(PyObject *const *dict_items, Py_ssize_t nt, PyObject *const *value_items, Py_ssize_t nv,
                       const int64_t *vptr) {
    Py_ssize_t k = 0, per = nt > 0 ? (nv + nt - 1) / nt : 0;  /* values per dict, rounded up: the block's */
    for (Py_ssize_t t = 0; t < nt; t++) {
        if (t % WARM_BLOCK == 0) {
            Py_ssize_t t1 = t + WARM_BLOCK < nt ? t + WARM_BLOCK : nt, k1 = k + (t1 - t) * per;
            warm_state(dict_items, t, t1, value_items, k, k1 < nv ? k1 : nv, vptr);
        }
        PyObject *d = dict_items[t];
        if (d == Py_None) continue;
        if (!PyDict_Check(d)) return 0;
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        while (PyDict_Next(d, &pos, &key, &value)) {
            if (k >= nv || value != value_items[k]) return 0;
            if (vptr[k] != 0) {
                int64_t address;
                if (!address_of(value, &address)) return -1;
                if (address != vptr[k]) return 0;
            }
            k++;
        }
    }
    return k == nv;
}

static int params_hold(PyObject *const *param_items, Py_ssize_t nt, const int64_t *pp, const int64_t *sz,
                       PyObject *const *grad_items, Py_ssize_t n_all, const int64_t *index, caffe2::TypeMeta meta,
                       int64_t *out) {
    for (Py_ssize_t t = 0; t < nt; t++) {
        AHEAD_TENSOR(param_items, nt, t, NULL, nt, NULL);
        AHEAD_TENSOR(grad_items, nt, t, index, n_all, NULL);
        int64_t address;
        if (!address_of(param_items[t], &address)) return -1;
        if (address != pp[t] || index[t] < 0 || index[t] >= n_all) return 0;
        PyObject *g = grad_items[index[t]];
        if (!plain(g)) return 0;
        int fits = grad_fits(g, meta, sz[t], &address);
        if (fits <= 0) return fits;
        out[t] = address;
    }
    return 1;
}

/* gather_own's tensor half, for tensors t0 .. t0 + n - 1 (at most WARM_BLOCK): every parameter
   plain, of `meta` and its size, at its address; its gradient, read from its autograd metadata,
   as gather's (a plain, dense, contiguous tensor of `meta` and that size); the gradients'
   addresses to out. 1 holds, 0 not (or a read threw). Stage by stage (see warm_state): the
   parameters' objects; their TensorImpls; their autograd metadata and storages; the gradients'
   TensorImpls; their storages and Python objects; then the checks, on what is now in the cache
   (each pointer read once, kept) */
static int params_own_block(PyObject *const *param_items, Py_ssize_t t0, Py_ssize_t n, const int64_t *pp,
                            const int64_t *sz, caffe2::TypeMeta meta, int64_t *out) {
    c10::TensorImpl *impls[WARM_BLOCK], *grads[WARM_BLOCK];
    PyObject *objects[WARM_BLOCK];
    const c10::TensorImpl *undefined = c10::UndefinedTensorImpl::singleton();
    try {
        {
            PyObject *const *items = param_items + t0;
            for (Py_ssize_t i = 0; i < n; i++) fetch(items[i]);
            for (Py_ssize_t i = 0; i < n; i++) {
                if (!plain(items[i])) return 0;
                prefetch_fields(impls[i] = impl_of(items[i]));
            }
            for (Py_ssize_t i = 0; i < n; i++) {
                c10::AutogradMetaInterface *m = impls[i]->autograd_meta();
                if (m == NULL) return 0;  /* no autograd metadata: no gradient */
                prefetch_lines(m, 128);  /* where TensorImpl::grad() reads the gradient */
                fetch(impls[i]->unsafe_storage().unsafeGetStorageImpl());
            }
            for (Py_ssize_t i = 0; i < n; i++) {
                if ((grads[i] = grad_impl(impls[i])) == undefined) return 0;
                prefetch_fields(grads[i]);
            }
            for (Py_ssize_t i = 0; i < n; i++) {
                fetch(grads[i]->unsafe_storage().unsafeGetStorageImpl());
                /* the gradient's Python object, where it has one (none: the getter would make a plain Tensor) */
                if ((objects[i] = grads[i]->pyobj_slot()->load_pyobj()) != NULL) fetch(objects[i]);
            }
            for (Py_ssize_t i = 0; i < n; i++) {
                c10::TensorImpl *impl = impls[i];
                if (objects[i] != NULL && !plain(objects[i])) return 0;  /* a subclass: the way through Python */
                Py_ssize_t t = t0 + i;
                if (impl->dtype() != meta || impl->numel() != sz[t] || (int64_t)(intptr_t)impl->mutable_data() != pp[t])
                    return 0;
                if (!impl_fits(grads[i], meta, sz[t], out + t)) return 0;
            }
        }
    } catch (...) {
        return 0;
    }
    return 1;
}

/* the tensor half over all nt tensors, block after block as `next` hands them out (shared by the
   threads that run it: the work balances itself); `failed` set by any that finds a mismatch
   stops them all. 1 holds, 0 not */
static int params_own_hold(PyObject *const *param_items, Py_ssize_t nt, const int64_t *pp, const int64_t *sz,
                           caffe2::TypeMeta meta, int64_t *out, std::atomic<Py_ssize_t> *next,
                           std::atomic<int> *failed) {
    while (!failed->load(std::memory_order_relaxed)) {
        Py_ssize_t t0 = next->fetch_add(WARM_BLOCK, std::memory_order_relaxed);
        if (t0 >= nt) return 1;
        if (!params_own_block(param_items, t0, nt - t0 < WARM_BLOCK ? nt - t0 : WARM_BLOCK, pp, sz, meta, out)) {
            failed->store(1, std::memory_order_relaxed);
            return 0;
        }
    }
    return 0;
}

namespace at { int get_num_threads(); }  /* torch.get_num_threads() (libtorch_cpu) */
/* from this many tensors on, gather's halves run on two threads where torch runs two or more */
#define TWO_THREADS_FROM 256
#endif

/* a contiguous int64 buffer (array("q")) of at least `need` items */
static int64_t *q_buffer(PyObject *obj, Py_buffer *view, Py_ssize_t need, int writable) {
    if (PyObject_GetBuffer(obj, view, (writable ? PyBUF_WRITABLE : 0) | PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    if (view->itemsize != 8 || view->format == NULL || strcmp(view->format, "q") != 0 || view->len < need * 8) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_TypeError, "expected an array('q') long enough");
        return NULL;
    }
    return (int64_t *)view->buf;
}

/* gather's and gather_own's common arguments (params, dicts, values: tuples, checked by the
   caller): nt tensors, nv values, one dict per tensor, at (args[8]) and the int64 buffers
   param_ptrs, sizes (nt each), value_ptrs (nv) and ptrs (at + nt, written); release_buffers after */
struct buffers { Py_ssize_t nt, nv, at; Py_buffer vp, vs, vv, vo; int64_t *pp, *sz, *vptr, *out; };

static int bucket_buffers(PyObject *const *args, struct buffers *b) {
    if (tensor_type == NULL) { PyErr_SetString(PyExc_RuntimeError, "set_types was not called"); return -1; }
    Py_ssize_t nt = b->nt = PyTuple_GET_SIZE(args[0]), nv = b->nv = PyTuple_GET_SIZE(args[5]);
    if (PyTuple_GET_SIZE(args[4]) != nt) { PyErr_SetString(PyExc_ValueError, "one dict per parameter"); return -1; }
    b->at = PyLong_AsSsize_t(args[8]);
    if (b->at < 0 && PyErr_Occurred()) return -1;
    if ((b->pp = q_buffer(args[1], &b->vp, nt, 0)) == NULL) return -1;
    if ((b->sz = q_buffer(args[2], &b->vs, nt, 0)) == NULL) { PyBuffer_Release(&b->vp); return -1; }
    if ((b->vptr = q_buffer(args[6], &b->vv, nv, 0)) == NULL) {
        PyBuffer_Release(&b->vp); PyBuffer_Release(&b->vs);
        return -1;
    }
    if ((b->out = q_buffer(args[7], &b->vo, b->at + nt, 1)) == NULL) {
        PyBuffer_Release(&b->vp); PyBuffer_Release(&b->vs); PyBuffer_Release(&b->vv);
        return -1;
    }
    return 0;
}

static void release_buffers(struct buffers *b) {
    PyBuffer_Release(&b->vp); PyBuffer_Release(&b->vs); PyBuffer_Release(&b->vv); PyBuffer_Release(&b->vo);
}

/* gather(params, param_ptrs, sizes, dtype, dicts, values, value_ptrs, ptrs, at, grads, index)
   -> the bucket's gradients (grads[index[t]]) or None */
static PyObject *gather(PyObject *self, PyObject *const *args, Py_ssize_t n) {
    if (n != 11 || !PyTuple_Check(args[0]) || !PyTuple_Check(args[4]) || !PyTuple_Check(args[5])
            || !PyList_Check(args[9])) {
        PyErr_SetString(PyExc_TypeError,
                        "gather(params, param_ptrs, sizes, dtype, dicts, values, value_ptrs, ptrs, at, grads, index)");
        return NULL;
    }
    PyObject *all = args[9];
    Py_ssize_t n_all = PyList_GET_SIZE(all);
    PyObject *params = args[0], *dtype = args[3], *dicts = args[4], *values = args[5];
    struct buffers b;
    if (bucket_buffers(args, &b) < 0) return NULL;
    Py_ssize_t nt = b.nt, nv = b.nv, at = b.at;
    int64_t *pp = b.pp, *sz = b.sz, *vptr = b.vptr, *out = b.out;
    Py_buffer vi;
    int64_t *index = q_buffer(args[10], &vi, nt, 0);
    if (index == NULL) {
        release_buffers(&b);
        return NULL;
    }
    PyObject *grads = PyList_New(nt);
    int ok = grads != NULL;
#ifdef OPTIMLAB_TORCH
    caffe2::TypeMeta meta;
    int fast = meta_of(dtype, &meta);
#endif
    int64_t v;
    /* the state first: entries replaced, added or removed; storages swapped under a tensor */
    Py_ssize_t k = 0;
    PyObject *const *value_items = items_of(values), *const *param_items = items_of(params);
    PyObject *const *dict_items = items_of(dicts), *const *grad_items = items_of(all);
#ifdef OPTIMLAB_TORCH
    /* many tensors: the two halves at once, on two threads (each is bound by memory latency) */
    if (ok && fast && nt >= TWO_THREADS_FROM && at::get_num_threads() > 1) {
        int state = 1, tensors = 1;
        #pragma omp parallel sections num_threads(2)
        {
            #pragma omp section
            state = state_holds(dict_items, nt, value_items, nv, vptr);
            #pragma omp section
            tensors = params_hold(param_items, nt, pp, sz, grad_items, n_all, index, meta, out + at);
        }
        if (state == 0 || (state == 1 && tensors == 0)) ok = 0;
        else if (state == 1 && tensors == 1) {
            for (Py_ssize_t t = 0; t < nt; t++) {
                PyObject *g = grad_items[index[t]];
                Py_INCREF(g);
                PyList_SET_ITEM(grads, t, g);
            }
            k = nv;
            nt = 0;  /* done: the loops below have nothing left to do */
        }
    }
#endif
    for (Py_ssize_t t = 0; ok && t < nt; t++) {
#ifdef OPTIMLAB_TORCH
        if (t + AHEAD < nt) fetch(dict_items[t + AHEAD]);
        if (t + AHEAD / 2 < nt && PyDict_Check(dict_items[t + AHEAD / 2]))
            prefetch_lines(((PyDictObject *)dict_items[t + AHEAD / 2])->ma_keys, 128);
#endif
        PyObject *d = PyTuple_GET_ITEM(dicts, t);
        if (d == Py_None) continue;
        if (!PyDict_Check(d)) { ok = 0; break; }
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        while (ok && PyDict_Next(d, &pos, &key, &value)) {
            if (k >= nv || value != PyTuple_GET_ITEM(values, k)) { ok = 0; break; }
            AHEAD_TENSOR(value_items, nv, k, NULL, nv, vptr);  /* (each stage sees every k once) */
            if (vptr[k] != 0) {
                v = data_ptr_of(value);
                if (v == -1 && PyErr_Occurred()) goto error;
                ok = v == vptr[k];
            }
            k++;
        }
    }
    ok = ok && k == nv;
    for (Py_ssize_t t = 0; ok && t < nt; t++) {
        AHEAD_TENSOR(param_items, nt, t, NULL, nt, NULL);
        AHEAD_TENSOR(grad_items, nt, t, index, n_all, NULL);
        PyObject *p = PyTuple_GET_ITEM(params, t);
        v = data_ptr_of(p);
        if (v == -1 && PyErr_Occurred()) goto error;
        if (v != pp[t]) { ok = 0; break; }
        if (index[t] < 0 || index[t] >= n_all) { ok = 0; break; }
        PyObject *g = PyList_GET_ITEM(all, index[t]);
        Py_INCREF(g);
        PyList_SET_ITEM(grads, t, g);  /* the list owns it (a None fails the type check below) */
        if (Py_TYPE(g) != tensor_type && Py_TYPE(g) != parameter_type) { ok = 0; break; }
#ifdef OPTIMLAB_TORCH
        if (fast) {
            int fits = grad_fits(g, meta, sz[t], &v);
            if (fits == 0) { ok = 0; break; }
            if (fits == 1) { out[at + t] = v; continue; }
        }
#endif
        PyObject *gd = attr(g, s_dtype);
        if (gd == NULL) goto error;
        Py_DECREF(gd);  /* dtypes are singletons: identity is equality */
        if (gd != dtype) { ok = 0; break; }
        int c = call_bool(g, s_is_contiguous);
        if (c < 0) {
            if (!PyErr_ExceptionMatches(PyExc_RuntimeError)) goto error;
            PyErr_Clear();  /* a sparse gradient has no contiguity */
            ok = 0;
            break;
        }
        if (!c) { ok = 0; break; }
        v = call_int(g, s_numel);
        if (v == -1 && PyErr_Occurred()) goto error;
        if (v != sz[t]) { ok = 0; break; }
        v = call_int(g, s_data_ptr);
        if (v == -1 && PyErr_Occurred()) goto error;
        out[at + t] = v;  /* only the gradient row: the caller rewrites it every step */
    }
    release_buffers(&b);
    PyBuffer_Release(&vi);
    if (!ok) { Py_XDECREF(grads); Py_RETURN_NONE; }
    return grads;
error:
    release_buffers(&b);
    PyBuffer_Release(&vi);
    Py_XDECREF(grads);
    return NULL;
}

#ifdef OPTIMLAB_TORCH
/* gather_own(params, param_ptrs, sizes, dtype, dicts, values, value_ptrs, ptrs, at) -> bool: gather's
   check with each gradient read from its parameter's autograd metadata (no Python object is made
   or touched), and each parameter also of `dtype` and its size. False on any mismatch, a tensor
   that is not plain, a read that throws, or a torch-function mode (which may answer `.grad`
   otherwise): the caller then takes the way through Python's getters (with_grads, gather) */
static PyObject *gather_own(PyObject *self, PyObject *const *args, Py_ssize_t n) {
    if (n != 9 || !PyTuple_Check(args[0]) || !PyTuple_Check(args[4]) || !PyTuple_Check(args[5])) {
        PyErr_SetString(PyExc_TypeError,
                        "gather_own(params, param_ptrs, sizes, dtype, dicts, values, value_ptrs, ptrs, at)");
        return NULL;
    }
    PyObject *params = args[0], *dicts = args[4], *values = args[5];
    struct buffers b;
    if (bucket_buffers(args, &b) < 0) return NULL;
    Py_ssize_t nt = b.nt, nv = b.nv, at = b.at;
    int64_t *pp = b.pp, *sz = b.sz, *vptr = b.vptr, *out = b.out;
    caffe2::TypeMeta meta;
    int state = 0, tensors = 0;
    if (!at::impl::torch_function_mode_enabled() && meta_of(args[3], &meta)) {
        PyObject *const *value_items = items_of(values), *const *param_items = items_of(params);
        PyObject *const *dict_items = items_of(dicts);
        /* (the gradients' row is written as it is read: the caller rewrites it every step) */
        std::atomic<Py_ssize_t> next(0);
        std::atomic<int> failed(0);
        if (nt >= TWO_THREADS_FROM && at::get_num_threads() > 1) {
            /* one thread checks the state, then joins the other on the tensors' blocks (the tensor
               half costs more: measured ~1.5x on 2,000 Adam tensors), so both finish together */
            #pragma omp parallel sections num_threads(2)
            {
                #pragma omp section
                {
                    state = state_holds(dict_items, nt, value_items, nv, vptr);
                    if (state != 1) failed.store(1, std::memory_order_relaxed);
                    else params_own_hold(param_items, nt, pp, sz, meta, out + at, &next, &failed);
                }
                #pragma omp section
                params_own_hold(param_items, nt, pp, sz, meta, out + at, &next, &failed);
            }
            tensors = !failed.load();
        } else {
            state = state_holds(dict_items, nt, value_items, nv, vptr);
            if (state == 1) tensors = params_own_hold(param_items, nt, pp, sz, meta, out + at, &next, &failed);
        }
    }
    release_buffers(&b);
    return PyBool_FromLong(state == 1 && tensors == 1);
}

/* listing(members, params, mask) -> bool: `params` (a group's list) holds exactly `members` (by
   identity, in order) and each member's gradient is as `mask` says: 0 none, 1 some (read as its
   TensorImpl, no Python object), 2 not looked at here (gather_own checks it). False also where a
   member to look at is not plain, a read throws, or a torch-function mode is active */
static PyObject *listing(PyObject *self, PyObject *const *args, Py_ssize_t n) {
    if (n != 3 || !PyTuple_Check(args[0]) || !PyBytes_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "listing(members: tuple, params, mask: bytes)");
        return NULL;
    }
    if (tensor_type == NULL) { PyErr_SetString(PyExc_RuntimeError, "set_types was not called"); return NULL; }
    PyObject *members = args[0];
    Py_ssize_t len = PyTuple_GET_SIZE(members);
    if (PyBytes_GET_SIZE(args[2]) != len || at::impl::torch_function_mode_enabled()) Py_RETURN_FALSE;
    PyObject *seq = PySequence_Fast(args[1], "params must be a sequence");
    if (seq == NULL) return NULL;
    const char *mask = PyBytes_AS_STRING(args[2]);
    int ok = PySequence_Fast_GET_SIZE(seq) == len;
    PyObject *const *items = items_of(seq);
    for (Py_ssize_t i = 0; ok && i < len; i++) {
        ok = items[i] == PyTuple_GET_ITEM(members, i);
        if (!ok || mask[i] == 2) continue;
        if (!plain(items[i])) { ok = 0; break; }
        try {
            ok = (grad_impl(impl_of(items[i])) != c10::UndefinedTensorImpl::singleton()) == (mask[i] == 1);
        } catch (...) {
            ok = 0;
        }
    }
    Py_DECREF(seq);
    return PyBool_FromLong(ok);
}
#endif

static int addresses(PyObject *const *args, Py_ssize_t n, Py_ssize_t want, int64_t *out) {
    if (n != want) { PyErr_SetString(PyExc_TypeError, "wrong number of arguments"); return -1; }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyLong_Check(args[i]) && !PyBool_Check(args[i])) {
            PyErr_SetString(PyExc_TypeError, "expected integers");
            return -1;
        }
        out[i] = PyLong_AsLongLong(args[i]);
        if (out[i] == -1 && PyErr_Occurred()) return -1;
    }
    return 0;
}

static PyObject *same_bytes(PyObject *self, PyObject *const *args, Py_ssize_t n) {
    int64_t a[3];
    if (addresses(args, n, 3, a) < 0) return NULL;
    return PyBool_FromLong(memcmp((const void *)(intptr_t)a[0], (const void *)(intptr_t)a[1], (size_t)a[2]) == 0);
}

static PyObject *advance(PyObject *self, PyObject *const *args, Py_ssize_t n) {
    int64_t a[3];
    if (addresses(args, n, 3, a) < 0) return NULL;
    if (a[2]) { double *x = (double *)(intptr_t)a[0]; for (int64_t i = 0; i < a[1]; i++) x[i] = x[i] + 1.0; }
    else { float *x = (float *)(intptr_t)a[0]; for (int64_t i = 0; i < a[1]; i++) x[i] = x[i] + 1.0f; }
    Py_RETURN_NONE;
}

static PyObject *fill(PyObject *self, PyObject *const *args, Py_ssize_t n) {
    if (n != 4) { PyErr_SetString(PyExc_TypeError, "fill(address, n, value, double)"); return NULL; }
    int64_t a[2];
    if (addresses(args, 2, 2, a) < 0) return NULL;
    double value = PyFloat_AsDouble(args[2]);
    if (value == -1.0 && PyErr_Occurred()) return NULL;
    int dbl = PyObject_IsTrue(args[3]);
    if (dbl < 0) return NULL;
    if (dbl) { double *x = (double *)(intptr_t)a[0]; for (int64_t i = 0; i < a[1]; i++) x[i] = value; }
    else { float *x = (float *)(intptr_t)a[0]; float f = (float)value; for (int64_t i = 0; i < a[1]; i++) x[i] = f; }
    Py_RETURN_NONE;
}

#ifdef OPTIMLAB_TORCH
/* set_dtypes(((dtype, tensor of that dtype), ...)): the dtypes gather reads from TensorImpls */
static PyObject *set_dtypes(PyObject *self, PyObject *const *args, Py_ssize_t n) {
    if (n != 1 || !PyTuple_Check(args[0]) || PyTuple_GET_SIZE(args[0]) > MAX_DTYPES) {
        PyErr_SetString(PyExc_TypeError, "set_dtypes(((dtype, tensor), ...))");
        return NULL;
    }
    Py_ssize_t len = PyTuple_GET_SIZE(args[0]);
    for (Py_ssize_t i = 0; i < len; i++) {
        PyObject *pair = PyTuple_GET_ITEM(args[0], i);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 || !plain(PyTuple_GET_ITEM(pair, 1))) {
            PyErr_SetString(PyExc_TypeError, "set_dtypes: pairs of (dtype, plain tensor)");
            return NULL;
        }
    }
    for (int i = 0; i < n_dtypes; i++) Py_CLEAR(dtype_objects[i]);
    n_dtypes = 0;
    for (Py_ssize_t i = 0; i < len; i++) {
        PyObject *pair = PyTuple_GET_ITEM(args[0], i);
        dtype_objects[n_dtypes] = PyTuple_GET_ITEM(pair, 0);
        Py_INCREF(dtype_objects[n_dtypes]);
        dtype_metas[n_dtypes++] = impl_of(PyTuple_GET_ITEM(pair, 1))->dtype();
    }
    Py_RETURN_NONE;
}

/* grad_address(p): the TensorImpl this module finds for p.grad from p's autograd metadata, or None */
static PyObject *grad_address(PyObject *self, PyObject *const *args, Py_ssize_t n) {
    if (n != 1 || !plain(args[0])) { PyErr_SetString(PyExc_TypeError, "grad_address(plain tensor)"); return NULL; }
    c10::TensorImpl *g;
    try {
        g = grad_impl(impl_of(args[0]));
    } catch (...) {
        Py_RETURN_NONE;
    }
    if (g == c10::UndefinedTensorImpl::singleton()) Py_RETURN_NONE;
    return PyLong_FromVoidPtr((void *)g);
}

/* impl_address(t): the pointer this module takes for t's TensorImpl, not followed (compare `t._cdata`) */
static PyObject *impl_address(PyObject *self, PyObject *const *args, Py_ssize_t n) {
    if (n != 1 || !plain(args[0])) { PyErr_SetString(PyExc_TypeError, "impl_address(plain tensor)"); return NULL; }
    return PyLong_FromVoidPtr((void *)impl_of(args[0]));
}

/* probe(t): (data_ptr or None where it throws, numel, is_contiguous, is_sparse, is_complex, dtype
   known and equal to t's) as this module reads them, to be compared with Python's */
static PyObject *probe(PyObject *self, PyObject *const *args, Py_ssize_t n) {
    if (n != 2 || !plain(args[0])) { PyErr_SetString(PyExc_TypeError, "probe(plain tensor, dtype)"); return NULL; }
    c10::TensorImpl *impl = impl_of(args[0]);
    PyObject *address;
    try {
        address = PyLong_FromVoidPtr(impl->mutable_data());
    } catch (...) {
        address = Py_None;
        Py_INCREF(address);
    }
    caffe2::TypeMeta meta;
    int known = meta_of(args[1], &meta) && meta == impl->dtype();
    int64_t numel = -1;
    int contiguous = -1;
    try {
        if (!impl->is_sparse()) {
            numel = impl->numel();
            contiguous = impl->is_contiguous();
        }
    } catch (...) {
        numel = -2;
    }
    return Py_BuildValue("(NLiiii)", address, (long long)numel, contiguous, is_sparse_of(args[0]),
                         is_complex_of(args[0]), known);
}
#endif

#ifdef OPTIMLAB_TORCH
namespace at { bool hasCallbacks(); }  /* ATen/record_function.h (libtorch_cpu) */

/* recording() -> bool: whether torch's record_function would be seen by anything here: a
   RecordFunction callback (a profiler, an observer; thread-local or global), a torch-function
   mode or a dispatch mode (which would see its profiler ops) */
static PyObject *recording(PyObject *self, PyObject *const *args, Py_ssize_t n) {
    return PyBool_FromLong(at::hasCallbacks() || at::impl::torch_function_mode_enabled()
                           || c10::impl::TorchDispatchModeTLS::any_modes_set());
}
#endif

static PyMethodDef methods[] = {
    {"set_types", (PyCFunction)(void (*)(void))set_types, METH_FASTCALL, NULL},
    {"with_grads", (PyCFunction)(void (*)(void))with_grads, METH_FASTCALL, NULL},
    {"same", (PyCFunction)(void (*)(void))same, METH_FASTCALL, NULL},
    {"same_state", (PyCFunction)(void (*)(void))same_state, METH_FASTCALL, NULL},
    {"gather", (PyCFunction)(void (*)(void))gather, METH_FASTCALL, NULL},
    {"same_bytes", (PyCFunction)(void (*)(void))same_bytes, METH_FASTCALL, NULL},
    {"advance", (PyCFunction)(void (*)(void))advance, METH_FASTCALL, NULL},
    {"fill", (PyCFunction)(void (*)(void))fill, METH_FASTCALL, NULL},
#ifdef OPTIMLAB_TORCH
    {"set_dtypes", (PyCFunction)(void (*)(void))set_dtypes, METH_FASTCALL, NULL},
    {"impl_address", (PyCFunction)(void (*)(void))impl_address, METH_FASTCALL, NULL},
    {"grad_address", (PyCFunction)(void (*)(void))grad_address, METH_FASTCALL, NULL},
    {"probe", (PyCFunction)(void (*)(void))probe, METH_FASTCALL, NULL},
    {"gather_own", (PyCFunction)(void (*)(void))gather_own, METH_FASTCALL, NULL},
    {"listing", (PyCFunction)(void (*)(void))listing, METH_FASTCALL, NULL},
    {"recording", (PyCFunction)(void (*)(void))recording, METH_FASTCALL, NULL},
#endif
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_native", NULL, -1, methods};

PyMODINIT_FUNC PyInit__native(void) {
#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL;
    INTERN(s_grad, "grad") INTERN(s_data_ptr, "data_ptr") INTERN(s_dtype, "dtype")
    INTERN(s_is_contiguous, "is_contiguous") INTERN(s_numel, "numel") INTERN(s_is_sparse, "is_sparse")
    INTERN(s_is_complex, "is_complex")
    return PyModule_Create(&moduledef);
}
"""

NAME = "optimlab.kernels._native"
FLAGS = ["-O2", "-fPIC", "-shared", "-fno-strict-aliasing", "-I" + sysconfig.get_paths()["include"]]
_TORCH = Path(torch.__file__).parent
#: the same source as C++ against torch's headers (c10's TensorImpl only: a few seconds to build)
TORCH_FLAGS = ["-x", "c++", "-std=c++20", "-DOPTIMLAB_TORCH=1", "-O2", "-fPIC", "-shared", "-fno-strict-aliasing",
               f"-D_GLIBCXX_USE_CXX11_ABI={int(getattr(torch._C, '_GLIBCXX_USE_CXX11_ABI', True))}",
               "-I" + sysconfig.get_paths()["include"], "-I" + str(_TORCH / "include"),
               "-fopenmp", "-L" + str(_TORCH / "lib"), "-Wl,--no-as-needed", "-lc10", "-ltorch_cpu", "-Wl,-rpath," + str(_TORCH / "lib"),
               "-lstdc++"]

_lock = threading.Lock()
_module: list[Any] = []  # [module or None] once tried
#: why each build could not be had, when it could not (``"torch"``: against torch's headers, ``"c"``)
unavailable: dict[str, str] = {}


def _import(lib: ctypes.CDLL, path: Path) -> Any:
    loader = importlib.machinery.ExtensionFileLoader(NAME, str(path))
    spec = importlib.util.spec_from_file_location(NAME, str(path), loader=loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    mod.set_types(torch.Tensor, torch.nn.Parameter, *map(_descriptor, DESCRIPTORS))
    if hasattr(mod, "probe"):
        _self_test(mod)
    return mod


DESCRIPTORS = ("grad", "data_ptr", "dtype", "is_contiguous", "numel", "is_sparse", "is_complex")
#: the dtypes the C++ build reads from TensorImpls (a gradient of another dtype fails the check)
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.complex64, torch.complex128,
          torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool)


def _self_test(mod: Any) -> None:
    """Before the C++ build is used: its idea of torch's tensor object (the TensorImpl pointer
    after the object header) must be ``Tensor._cdata``, the gradient it finds from a parameter's
    autograd metadata the one ``p.grad`` then answers (also for a gradient from ``backward()``,
    read before its Python object exists), and everything it reads from TensorImpls must be what
    Python reads; ImportError otherwise (the C build is used instead)."""
    mod.set_dtypes(tuple((d, torch.empty(0, dtype=d)) for d in DTYPES))
    base = torch.arange(12.0).reshape(3, 4)
    samples = [torch.zeros(5), torch.nn.Parameter(torch.ones(2, 3)), base.t(), base[1:], torch.tensor(2.0),
               torch.zeros(0), torch.zeros(3, dtype=torch.float64), torch.zeros(2, dtype=torch.complex64),
               torch.zeros(4, dtype=torch.int32), torch.tensor([1.0, 0.0, 2.0, 0.0]).to_sparse()]  # no RNG: a step never draws
    samples[1].grad = torch.full((2, 3), 2.0)
    # a gradient made by backward(): no Python object until `.grad` is read, which the loop below
    # does only after grad_address has found it (gather_own and listing read such gradients)
    with torch.inference_mode(False), torch.enable_grad():  # (first loaded inside a step, say)
        fresh = torch.nn.Parameter(torch.ones(3))
        (fresh * 2.0).sum().backward()
    samples.append(fresh)
    for t in samples:
        if mod.impl_address(t) != t._cdata:
            raise ImportError("torch's tensor object is not laid out as this build assumes")
        if mod.grad_address(t) != (None if t.grad is None else t.grad._cdata):
            raise ImportError("torch's autograd metadata does not hold the gradient as this build assumes")
    for t in samples:
        sparse = t.is_sparse
        want = (None if sparse else t.data_ptr(), -1 if sparse else t.numel(), -1 if sparse else int(t.is_contiguous()),
                int(sparse), int(t.is_complex()), 1)
        if mod.probe(t, t.dtype) != want:
            raise ImportError(f"TensorImpl reads differ from Python's: {mod.probe(t, t.dtype)} != {want}")


def _descriptor(name: str) -> Any:
    """torch's C descriptor that ``Tensor.<name>`` and ``Parameter.<name>`` both find, or None
    (then the C checks look the name up on each tensor, as Python would)."""
    found = inspect.getattr_static(torch.Tensor, name, None)
    if type(found).__name__ not in ("method_descriptor", "getset_descriptor"):
        return None
    return found if inspect.getattr_static(torch.nn.Parameter, name, None) is found else None


def build(against_torch: bool) -> Any:
    """The module compiled from :data:`SOURCE` (built or loaded from the cache): as C++ against
    torch's headers (tensor fields read from TensorImpls) or as C on Python's headers only; raises
    when it cannot be had."""
    flags = TORCH_FLAGS if against_torch else FLAGS
    source = SOURCE.replace("KEY_SYMBOL", cpu.KEY_SYMBOL)
    parts = [source, " ".join(flags), cpu.compiler() or "", sys.version,
             sysconfig.get_config_var("EXT_SUFFIX") or "", sys.platform, "native"]
    if against_torch:
        parts += [torch.__version__, str(_TORCH)]
    key = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]
    if not against_torch:
        return cpu.obtain(source, key, _import, flags)
    # a C++ build that failed here once is not tried again by every process (seconds each): its
    # failure is noted beside the cache (a note only skips the attempt: the C build is used)
    failed = cpu._cache_folder() / f"optimlab_{key}.failed"
    if failed.exists():
        raise cpu.Unsupported(f"failed before on this machine (see {failed})")
    try:
        return cpu.obtain(source, key, _import, flags)
    except Exception as error:
        try:
            failed.write_text(f"{error}\n")
        except OSError:
            pass
        raise


def module() -> Any:
    """The compiled module, built or loaded on first call: the C++ build where torch's headers and
    a C++ compiler are found, else the C build; None where neither can be had (warned once)."""
    if _module:
        return _module[0]
    with _lock:
        if not _module:
            mod = None
            for name, against_torch in (("torch", True), ("c", False)):
                try:
                    mod = build(against_torch)
                    break
                except Exception as error:  # noqa: BLE001 - the next build, else the checks run in Python
                    unavailable[name] = str(error)
            if mod is None:
                warnings.warn(f"optimlab: native step checks unavailable, running them in Python "
                              f"({unavailable['c']})", RuntimeWarning, stacklevel=4)
            _module.append(mod)
    return _module[0]


def kind(checks: Any) -> str:
    """Where the per-step checks run: "C++" (TensorImpl reads), "C" (Python's C API) or "Python"."""
    return "Python" if checks is python else "C++" if hasattr(checks, "probe") else "C"


_OFF = frozenset({"0", "false", "no", "off"})
_environ = getattr(os.environ, "_data", None)  # CPython's own dict behind os.environ (bytes keys)


def switched_off(name: str) -> bool:
    """True when the environment variable ``name`` says 0 / false / no / off (read every call:
    a test or a user may set it between steps)."""
    if type(_environ) is dict and sys.platform != "win32":  # one dict lookup, no Python-level Mapping.get
        value = _environ.get(name.encode())
        return value is not None and value.decode(errors="replace").strip().lower() in _OFF
    return os.environ.get(name, "1").strip().lower() in _OFF


def enabled() -> Any:
    """The compiled module, or :data:`python` when ``OPTIMLAB_NATIVE=0`` or it cannot be built."""
    if switched_off("OPTIMLAB_NATIVE"):
        return python
    return _module[0] or python if _module else module() or python


def recording() -> bool:
    """Whether torch's ``record_function`` around a step would be seen by anything: True unless
    the C++ build (where :func:`enabled` gives it) says no RecordFunction callback (profiler,
    observer), torch-function mode or dispatch mode is active; the C build and Python cannot
    read that from torch: True."""
    checks = enabled()
    return checks.recording() if hasattr(checks, "recording") else True


class _Python:
    """The same functions in Python: where no C compiler or Python headers are found, and the
    reference the C module is tested against."""

    _grad = attrgetter("grad")
    _PLAIN = frozenset({torch.Tensor, torch.nn.Parameter})

    @staticmethod
    def with_grads(params: Any, complex_: bool, grads: list) -> tuple[list, int]:
        pairs = [(p, g) for p, g in zip(params, map(_Python._grad, params)) if g is not None]
        grads.extend(g for _, g in pairs)
        flags = 1 if any(g.is_sparse for _, g in pairs) else 0
        if complex_ and any(p.is_complex() for p, _ in pairs):
            flags |= 2
        return [p for p, _ in pairs], flags

    @staticmethod
    def same(a: Any, b: Any) -> bool:
        return len(a) == len(b) and all(map(is_, a, b))

    @staticmethod
    def same_state(state: dict, keys: tuple, values: tuple) -> bool:
        return (len(state) == len(keys) and all(map(is_, state.keys(), keys))
                and all(map(is_, state.values(), values)))

    def gather(self, params: tuple, param_ptrs: array, sizes: array, dtype: torch.dtype, dicts: tuple,
               values: tuple, value_ptrs: array, ptrs: array, at: int, all_grads: list, index: array) -> list | None:
        now = list(chain.from_iterable(d.values() for d in dicts if d is not None))
        if len(now) != len(values) or not all(map(is_, now, values)):
            return None
        if any(e and v.data_ptr() != e for v, e in zip(now, value_ptrs)):
            return None
        if array("q", map(Tensor.data_ptr, params)) != param_ptrs[:len(params)]:
            return None
        if any(not 0 <= i < len(all_grads) for i in index):
            return None
        grads = [all_grads[i] for i in index]
        if not self._PLAIN.issuperset(map(type, grads)):
            return None
        try:
            if (any(g.dtype is not dtype for g in grads) or not all(map(Tensor.is_contiguous, grads))
                    or array("q", map(Tensor.numel, grads)) != sizes[:len(params)]):
                return None
        except RuntimeError:  # a sparse gradient has no contiguity
            return None
        ptrs[at:at + len(grads)] = array("q", map(Tensor.data_ptr, grads))
        return grads

    def gather_own(self, params: tuple, param_ptrs: array, sizes: array, dtype: torch.dtype, dicts: tuple,
                   values: tuple, value_ptrs: array, ptrs: array, at: int) -> bool:
        if torch._C._is_torch_function_mode_enabled() or not self._PLAIN.issuperset(map(type, params)):
            return False
        if any(p.dtype is not dtype for p in params) or array("q", map(Tensor.numel, params)) != sizes[:len(params)]:
            return False
        grads = list(map(self._grad, params))
        return self.gather(params, param_ptrs, sizes, dtype, dicts, values, value_ptrs, ptrs, at, grads,
                           array("q", range(len(params)))) is not None

    def listing(self, members: tuple, params: Any, mask: bytes) -> bool:
        if torch._C._is_torch_function_mode_enabled() or len(params) != len(members) or len(mask) != len(members):
            return False
        return all(map(is_, params, members)) and all(
            m == 2 or (type(p) in self._PLAIN and (p.grad is not None) == (m == 1)) for p, m in zip(params, mask))

    @staticmethod
    def same_bytes(a: int, b: int, nbytes: int) -> bool:
        return ctypes.string_at(a, nbytes) == ctypes.string_at(b, nbytes)

    @staticmethod
    def advance(address: int, n: int, double: bool) -> None:
        kind = ctypes.c_double if double else ctypes.c_float
        values = (kind * n).from_address(address)
        for i in range(n):
            values[i] = values[i] + 1.0  # exact in double; a float32 store rounds as float32 addition

    @staticmethod
    def fill(address: int, n: int, value: float, double: bool) -> None:
        kind = ctypes.c_double if double else ctypes.c_float
        values = (kind * n).from_address(address)
        for i in range(n):
            values[i] = value


python = _Python()

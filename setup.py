"""Emo Pillars: LLM-distilled fine-grained emotion classification (JAX/Flax + llama.cpp)."""
from setuptools import find_packages, setup

# Versions tested together on Python 3.11 (CPU); see README "Tested versions".
CORE = [
    "jax==0.10.2", "jaxlib==0.10.2", "flax==0.12.8", "optax==0.2.8",
    "orbax-checkpoint==0.12.8", "grain==0.2.18", "tokenizers==0.23.3",
    "safetensors==0.8.0", "numpy==2.4.6", "pyyaml==6.0.4", "pydantic==2.14.4",
    "tqdm==4.70.1", "rich==15.0.0", "matplotlib==3.11.2", "tensorboardX==2.6.5",
    "scipy==1.17.1",   # benchmarks: posterior calibration (also a jax dependency)
    "qwix==0.1.8",     # int8 prediction (emopillars predict --quantize int8)
]
EXTRAS = {
    # builds llama.cpp from source (about 7 min on 2 cores); the Makefile passes
    # CMAKE_ARGS="-DGGML_NATIVE=OFF" (why: see there); for CUDA offload:
    # CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_CUDA=on" pip install --no-cache-dir -e ".[gen]"
    "gen": ["llama-cpp-python==0.3.36"],
    # torch 2.13.0 is the CPU wheel on this machine; a looser pin pulls a CUDA build
    "torch": ["torch==2.13.0", "transformers==5.23.0"],
    "hub": ["huggingface_hub==2.4.0"],
    "tfds": ["tensorflow-datasets"],
    "dev": ["pytest==9.2.0", "datasets==5.2.0", "gguf==0.19.0"],   # gguf: scripts/make_proxy_gguf.py
}
EXTRAS["all"] = sorted({req for name in ("gen", "torch", "hub", "dev") for req in EXTRAS[name]})

setup(
    name="emopillars",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["emopillars_jax", "emopillars_jax.*", "data_gen", "data_gen.*"]),
    package_data={"data_gen": ["prompts/*", "corpus/*"], "emopillars_jax": ["templates/*"]},
    include_package_data=True,
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["emopillars=emopillars_jax.cli:main"]},
)

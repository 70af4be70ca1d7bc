import subprocess
import sys


def test_router_core_imports_no_frameworks():
    code = (
        "import router, router.policies, router.balancer, router.core, router.classifier, sys; "
        "import router.embedder, router.onnx_embedder; "
        "bad = {'ray', 'fastapi', 'sqlalchemy', 'torch', 'sentence_transformers', 'onnxruntime', 'onnx', "
        "'tokenizers', 'transformers'} & set(sys.modules); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

"""export: add ONNX variants (fp32, fp16, int8) to a bundle, each gated on parity with the torch model.

Entry point: :func:`export.run.export_bundle` (``rewardserve export`` on the command line). Imports
:mod:`rewardmodel`, never ``training`` or ``service``.
"""

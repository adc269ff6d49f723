"""cream_data: the labeling half of cream — tables, inputs, ranking and consistency, pairing, SQL, Hub.

Importing this package never imports torch: engines that run models live in ``cream_data.engines``
and import torch / transformers / vllm lazily.
"""

from cream_data.errors import CreamError

__all__ = ["CreamError"]

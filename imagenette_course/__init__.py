__version__ = "0.1.0"

import warnings as _warnings
# Importing fastai calls `torch.jit.script`, deprecated in recent torch, and accelerate's import asks for ipywidgets:
# neither warning tells a learner or someone running a recipe anything. Filtered here, once, for the package, its
# command line and every notebook (each notebook imports the package before fastai).
_warnings.filterwarnings('ignore', message=r'`torch.jit.script` is deprecated', category=FutureWarning)
_warnings.filterwarnings('ignore', message='IProgress not found')

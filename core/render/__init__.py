"""3D: phase surfaces of a block of a segmentation (:mod:`.surfaces`), the 3D numbers beside them (:mod:`.morphology`),
and the pictures and exports (:mod:`.views`: PNG, self-contained HTML, grey-value volume rendering)."""

import os

# Headless machines have no X display; VTK's wheel renders with Mesa through EGL (STACK.md). Set before vtk loads.
os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

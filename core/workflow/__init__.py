"""The workflow layer: a project's steps, where they keep their files, and the jobs that run them.

Each step has one shared name across the page, the CLI command and the module that does it for a project:

==============  ========================  ============================  ===========================================
step            page                      CLI                           project entry point
==============  ========================  ============================  ===========================================
data            ``pages/1_Data.py``       ``data``, ``demo-project``    :mod:`core.workflow.data`
label           ``pages/2_Label.py``      ``labels``                    :mod:`core.workflow.labels`
ground truth    ``pages/3_Ground_Truth``  ``ground-truth``, ``rf``      :mod:`core.workflow.ground_truth`
train           ``pages/4_Train.py``      ``train``                     :mod:`core.workflow.train`
segment         ``pages/5_Segment.py``    ``segment``                   :mod:`core.workflow.segment`
evaluate        ``pages/6_Evaluate.py``   ``evaluate``                  :mod:`core.workflow.evaluate`
3D              ``pages/7_3D.py``         ``render``                    :mod:`core.workflow.render`
analysis        ``pages/8_Analysis.py``   ``analyze``                   :mod:`core.workflow.analysis`
live            ``pages/9_Live.py``       ``watch``                     :mod:`core.workflow.live`
share           (the home page)           ``export``, ``import``,       :mod:`core.workflow.share`,
                                          ``share``                     :mod:`core.workflow.access`
all of them     (the home page)           ``run``                       :mod:`core.workflow.run`
==============  ========================  ============================  ===========================================

Beside the steps: :mod:`.project` (the project store: one folder, one ``project.json``, a lock), :mod:`.paths` (the
one place that knows each step's folders and reads their result files), :mod:`.jobs` (job records on disk, the
queue) and :mod:`.worker` (``python -m core worker``, which runs the queued jobs outside the web server).

The science each step calls lives in the packages beside this one: :mod:`core.imaging`, :mod:`core.labelling`,
:mod:`core.network`, :mod:`core.segmentation` and :mod:`core.analysis`. Nothing in those imports the workflow layer
(tests/test_layout.py checks the direction), and nothing in ``core`` imports streamlit.
"""

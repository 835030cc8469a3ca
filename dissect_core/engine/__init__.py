"""The torch layer: target models, CLIP, probe sets, recording layer outputs, the probe
pass, similarity, label quality, the stage cache and the pipeline that ties them up."""

# Load the gpt-demo magics (%%gpt, %gpt_chat, %gpt_next, %gpt_embed, %%gpt_moderate, %gpt_rank)
# in every IPython shell and Jupyter kernel, without typing %load_ext gpt_demo.
#
# `gpt-demo jupyter install` appends the block below to
# ~/.ipython/profile_default/ipython_config.py (or $IPYTHONDIR/...) and
# `gpt-demo jupyter uninstall` removes it. To do it by hand, copy the block there.
# Both terminal IPython and ipykernel read that file.
c = get_config()  # noqa: F821

# >>> gpt-demo: load the Jupyter magics (%%gpt, %gpt_chat, ...) in every kernel >>>
c.InteractiveShellApp.extensions.append("gpt_demo")
# <<< gpt-demo <<<

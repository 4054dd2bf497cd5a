"""python -m gpt_demo  ==  gpt-demo"""
import sys

from .cli import main

sys.exit(main())

"""Special tokens shared by the data that writes them and the models that read them."""

IMAGE = "<image>"  # LLaVA's image placeholder in a question
SEG = "[SEG]"  # LISA: each [SEG] in an answer decodes one mask
REF = "[REF]"  # SegLLM: the answer refers to an earlier round's target
IM_START, IM_END = "<im_start>", "<im_end>"  # LLaVA's image start/end tokens around <image> (mm_use_im_start_end)

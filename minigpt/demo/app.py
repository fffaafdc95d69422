"""The demo's page: a gradio Blocks app around :class:`minigpt.demo.session.DemoChat`.

``build_demo(chat, examples)`` lays out the page (image, video, chat, task shortcuts, generation
controls, boxes, examples) and wires its events; ``launch_demo`` queues and serves it. The page's
API (what ``gradio_client`` calls) has two endpoints:

* ``/ask`` — inputs ``image`` (file), ``message``, ``task`` (``chat`` or a MiniGPT-v2 task),
  ``temperature``, ``beams``, ``max_new_tokens``, ``video`` (file, optional: a question about a
  video instead of an image); outputs the chat history, the image with the
  answer's boxes (or None), a status line and the cleared message box. The conversation is kept
  per client session, so a second ``/ask`` continues the first.
* ``/clear`` — forgets the session's image and conversation.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import gradio as gr
from PIL import Image

from minigpt.demo.examples import DemoExample
from minigpt.demo.inputs import DEMO_TASKS, DRAW_TASK, NO_TASK, TASK_HINTS, DemoInputError
from minigpt.demo.session import Conversation, DemoChat, Reply

DEFAULT_TITLE = "minigpt demo"
TASK_CHOICES: List[Tuple[str, str]] = [("chat (no tag)", NO_TASK)] + [(f"[{t}]", t) for t in DEMO_TASKS]

# System fonts only: the default theme fetches web fonts, which an offline machine cannot reach.
_THEME = gr.themes.Default(
    font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
)


# Small images (the synthetic scenes are 64 px) fill their boxes instead of sitting in a corner.
_CSS = "#image-input img, #boxes-output img { width: 100%; height: 100%; object-fit: contain; }"


def upload_path(payload: Any) -> Optional[str]:
    """The uploaded file's path from an image input's raw value (the events that read the image skip
    gradio's preprocessing: ``gr.Image`` opens every upload with PIL first, so a file that is not an
    image would fail there with a bare "Error" instead of :func:`minigpt.demo.inputs.load_image`'s
    message). Gradio has already checked that the path lies in its upload folder.
    """
    if payload is None:
        return None
    if isinstance(payload, dict) and isinstance(payload.get("video"), dict):  # a video input's {video, subtitles}
        payload = payload["video"]
    if isinstance(payload, dict):
        path, url = payload.get("path"), payload.get("url") or ""
    else:  # a FileData-like object
        path, url = getattr(payload, "path", None), getattr(payload, "url", None) or ""
    if path:
        return str(path)
    if url.startswith("data:"):
        raise DemoInputError("Inline (base64) images and videos are not taken: upload the file.")
    raise DemoInputError("The upload arrived without a file; upload it again.")


def page_messages(messages: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The session's messages for the Chatbot: a drawn image (a PIL image as content) becomes an image in the chat."""
    return [
        {**m, "content": gr.Image(value=m["content"], show_label=False)} if isinstance(m["content"], Image.Image) else m
        for m in messages
    ]


def _status(reply: Reply) -> str:
    if not reply.status:
        return ""
    return f"**⚠ {reply.status}**" if reply.error else reply.status


def build_demo(
    chat: DemoChat,
    examples: Sequence[DemoExample] = (),
    title: str = DEFAULT_TITLE,
    description: str = "",
    concurrency_limit: int = 1,
) -> gr.Blocks:
    """The demo page for ``chat``: events that use the model run at most ``concurrency_limit`` at a time.

    ``examples`` fill the image, task and message when clicked; ``description`` (Markdown) goes
    under the title.
    """

    def upload_handler(accept: Callable[[Optional[Conversation], Optional[str]], Reply]):
        """The callback of an upload box (image or video) whose file ``accept`` turns into a reply."""

        def on_upload(payload: Any, conversation: Optional[Conversation]):
            if payload is None:  # removed (or cleared after a refused upload): keep the status line as it is
                return gr.skip(), Conversation(), [], None, gr.skip()
            try:
                reply = accept(conversation, upload_path(payload))
            except DemoInputError as exc:
                reply = Reply(Conversation(), [], status=str(exc), error=True)
            box = None if reply.error else gr.skip()  # a refused upload leaves its box empty
            return box, reply.conversation, page_messages(reply.messages), None, _status(reply)

        return on_upload

    on_image, on_video = upload_handler(chat.on_image), upload_handler(chat.on_video)

    def ask(
        image: Any,
        message: Optional[str],
        task: Optional[str],
        temperature: float,
        beams: float,
        max_new_tokens: float,
        video: Any = None,  # a default: gradio_client callers may leave the video out
        conversation: Optional[Conversation] = None,
    ):
        try:
            path = upload_path(image)
            video_path = upload_path(video)
        except DemoInputError as exc:
            refused = Reply(conversation or Conversation(), [], status=str(exc), error=True)
            yield (
                page_messages(chat.messages(refused.conversation)),
                gr.skip(),
                _status(refused),
                refused.conversation,
                gr.skip(),
            )
            return
        for reply in chat.respond(
            conversation, path, message, task, temperature, beams, max_new_tokens, video_path=video_path
        ):
            # the message box empties once the answer starts, and keeps the text when it was refused
            yield (
                page_messages(reply.messages),
                reply.boxes_image if reply.done else gr.skip(),
                _status(reply) if reply.done else "Answering…",
                reply.conversation,
                gr.skip() if reply.error else "",
            )

    def clear():
        return None, Conversation(), [], None, "", "", None

    def on_task(task: str) -> Dict[str, Any]:
        return gr.update(placeholder=TASK_HINTS.get(task, TASK_HINTS[NO_TASK]))

    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(f"# {title}" + (f"\n{description}" if description else ""))
        conversation = gr.State(Conversation())
        with gr.Row():
            with gr.Column(scale=2):
                image = gr.Image(
                    type="filepath",
                    sources=["upload", "clipboard"],
                    label="Image",
                    height=320,
                    elem_id="image-input",
                )
                # a question is about the image or the video (DemoChat refuses both at once)
                video = gr.Video(
                    sources=["upload"], label="Video (instead of an image)", height=200, elem_id="video-input"
                )
                boxes = gr.Image(
                    label="Boxes from the last answer",
                    type="pil",
                    format="png",
                    interactive=False,
                    height=320,
                    elem_id="boxes-output",
                )
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label="Chat", height=420, latex_delimiters=[], elem_id="chat")
                status = gr.Markdown("", label="status", elem_id="status")
                with gr.Row():
                    message = gr.Textbox(
                        label="Message",
                        show_label=False,
                        placeholder=TASK_HINTS[NO_TASK],
                        scale=5,
                        lines=1,
                        max_lines=4,
                        elem_id="message",
                    )
                    send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
                task = gr.Radio(
                    TASK_CHOICES + ([("draw (an image)", DRAW_TASK)] if chat.can_draw else []), value=NO_TASK,
                    label="Task shortcut (MiniGPT-v2 tags)", elem_id="task"
                )
                with gr.Accordion("Generation", open=False):
                    temperature = gr.Slider(
                        0.0,
                        chat.max_temperature,
                        value=0.0,
                        step=0.05,
                        label="Temperature (0 = greedy)",
                    )
                    beams = gr.Slider(
                        1,
                        chat.max_beams,
                        value=chat.num_beams,
                        step=1,
                        label="Beams (more than 1 does not stream)",
                    )
                    max_new_tokens = gr.Slider(
                        1,
                        chat.max_new_tokens_limit,
                        value=chat.max_new_tokens,
                        step=1,
                        label="Max new tokens",
                    )
                clear_button = gr.Button("Clear", elem_id="clear")
        if examples:
            gr.Examples(
                examples=[[e.image_path, e.task, e.message] for e in examples],
                inputs=[image, task, message],
                label="Examples (held-out synthetic scenes)",
            )

        image.change(
            on_image,
            [image, conversation],
            [image, conversation, chatbot, boxes, status],
            api_visibility="private",
            concurrency_limit=None,
            preprocess=False,  # see upload_path
        )
        video.change(
            on_video,
            [video, conversation],
            [video, conversation, chatbot, boxes, status],
            api_visibility="private",
            concurrency_limit=None,
            preprocess=False,  # see upload_path: gradio would otherwise try to convert the file first
        )
        task.change(on_task, task, message, queue=False, api_visibility="private")
        gr.on(
            [message.submit, send.click],
            ask,
            [image, message, task, temperature, beams, max_new_tokens, video, conversation],
            [chatbot, boxes, status, conversation, message],
            api_name="ask",
            concurrency_limit=concurrency_limit,
            concurrency_id="model",
            show_progress="minimal",
            preprocess=False,  # see upload_path
        )
        clear_button.click(
            clear, None, [image, conversation, chatbot, boxes, status, message, video], api_name="clear", queue=False
        )
    return demo


def launch_demo(
    demo: gr.Blocks,
    server_name: str = "127.0.0.1",
    server_port: Optional[int] = None,
    share: bool = False,
    max_queue: int = 16,
    max_file_size: Optional[int] = None,
    allowed_paths: Sequence[str] = (),
    block: bool = True,
) -> Any:
    """Queue ``demo`` (at most ``max_queue`` waiting requests) and serve it on ``server_name:server_port``.

    ``max_file_size`` (bytes) refuses larger uploads before they are written to disk;
    ``allowed_paths`` are folders the page may serve files from (the examples').
    """
    demo.queue(max_size=max_queue)
    return demo.launch(
        server_name=server_name,
        server_port=server_port,
        share=share,
        max_file_size=max_file_size,
        allowed_paths=list(allowed_paths),
        show_error=True,
        theme=_THEME,
        css=_CSS,
        prevent_thread_lock=not block,
    )

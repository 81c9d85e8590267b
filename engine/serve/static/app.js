// The page of `engine serve`: plain JavaScript, no build step. Everything goes through the
// documented HTTP API (/docs) and the webcam's WebSocket.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { style: "starry", styles: [] };

function options() {
  return {
    style: state.style,
    strength: Number($("strength").value),
    style_size: Number($("style-size").value),
    preserve_color: $("preserve-color").checked,
  };
}

async function failure(response) {
  try {
    const body = await response.json();
    return body.error || response.statusText;
  } catch (e) {
    return `${response.status} ${response.statusText}`;
  }
}

function say(id, text, error = false) {
  $(id).textContent = text;
  $(id).classList.toggle("error", error);
}

// ------------------------------------------------------------------ tabs

function setupTabs() {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  const select = (tab) => {
    for (const t of tabs) {
      const on = t === tab;
      t.setAttribute("aria-selected", String(on));
      t.tabIndex = on ? 0 : -1;
      $(t.getAttribute("aria-controls")).hidden = !on;
    }
    tab.focus();
  };
  tabs.forEach((tab, i) => {
    tab.addEventListener("click", () => select(tab));
    tab.addEventListener("keydown", (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (step) select(tabs[(i + step + tabs.length) % tabs.length]);
    });
  });
}

// ------------------------------------------------------------------ styles

async function loadStyles(pick) {
  const response = await fetch("/v1/styles");
  if (!response.ok) { say("photo-status", await failure(response), true); return; }
  state.styles = (await response.json()).styles;
  if (pick) state.style = pick;
  const named = state.styles.find((s) => s.name === state.style || s.aliases.includes(state.style));
  state.style = named ? named.name : (state.styles[0] || { name: "" }).name;
  const gallery = $("gallery");
  gallery.replaceChildren();
  for (const style of state.styles) {
    const button = document.createElement("button");
    button.type = "button";
    button.setAttribute("role", "radio");
    button.dataset.style = style.name;
    button.title = style.painting_name || style.description || style.name;
    let img;
    if (style.preview || style.painting) {
      img = document.createElement("img");
      img.alt = "";
      img.src = style.preview || style.painting;
    } else {  // a plugin's style without a preview: its initials
      img = document.createElement("span");
      img.className = "swatch";
      img.textContent = style.name.slice(0, 2).toUpperCase();
    }
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = style.name;
    button.append(img, name);
    button.addEventListener("click", () => chooseStyle(style.name));
    gallery.append(button);
  }
  markStyle();
}

function markStyle() {
  for (const button of $("gallery").children) {
    const on = button.dataset.style === state.style;
    button.setAttribute("aria-checked", String(on));
    button.tabIndex = on ? 0 : -1;
  }
}

function chooseStyle(name) {
  state.style = name;
  markStyle();
  webcam.sendOptions();
}

function setupGalleryKeys() {
  $("gallery").addEventListener("keydown", (event) => {
    const step = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 }[event.key];
    if (!step) return;
    event.preventDefault();
    const buttons = [...$("gallery").children];
    const at = buttons.findIndex((b) => b.dataset.style === state.style);
    const next = buttons[(at + step + buttons.length) % buttons.length];
    chooseStyle(next.dataset.style);
    next.focus();
  });
}

function setupControls() {
  for (const [input, output] of [["strength", "strength-value"], ["style-size", "style-size-value"]]) {
    $(input).addEventListener("input", () => { $(output).textContent = $(input).value; });
    $(input).addEventListener("change", () => webcam.sendOptions());
  }
  $("preserve-color").addEventListener("change", () => webcam.sendOptions());
  $("add-style-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData();
    form.append("painting", $("add-painting").files[0]);
    form.append("name", $("add-name").value);
    say("add-status", "reading the painting…");
    const response = await fetch("/v1/styles", { method: "POST", body: form });
    if (!response.ok) { say("add-status", await failure(response), true); return; }
    const added = await response.json();
    say("add-status", `added ${added.name}`);
    await loadStyles(added.name);
  });
}

// ------------------------------------------------------------------ photos

function setupPhotos() {
  const drop = $("drop");
  const input = $("photos");
  drop.addEventListener("click", () => input.click());
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); input.click(); }
  });
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    stylizeFiles([...event.dataTransfer.files]);
  });
  input.addEventListener("change", () => { stylizeFiles([...input.files]); input.value = ""; });
}

async function stylizeFiles(files) {
  const images = files.filter((f) => f.type.startsWith("image/") || /\.(jpe?g|png|webp|bmp|tiff?)$/i.test(f.name));
  if (!images.length) { say("photo-status", "pick image files (JPEG, PNG, WebP, ...)", true); return; }
  let done = 0;
  say("photo-status", `stylizing ${images.length} photo(s)…`);
  await Promise.all(images.map(async (file) => {
    const chosen = options();
    const form = new FormData();
    form.append("image", file);
    for (const [key, value] of Object.entries(chosen)) form.append(key, String(value));
    form.append("format", "png");
    const response = await fetch("/v1/stylize", { method: "POST", body: form });
    if (!response.ok) { say("photo-status", `${file.name}: ${await failure(response)}`, true); return; }
    const after = URL.createObjectURL(await response.blob());
    addResult(URL.createObjectURL(file), after, file.name, chosen.style);
    done += 1;
    say("photo-status", `${done} of ${images.length} stylized`);
  }));
}

function addResult(before, after, name, style) {
  const item = $("result-template").content.firstElementChild.cloneNode(true);
  item.querySelector(".before").src = before;
  item.querySelector(".after").src = after;
  const stem = name.replace(/\.[^.]+$/, "");
  item.querySelector(".caption").textContent = `${name} in ${style}`;
  const link = item.querySelector(".download");
  link.href = after;
  link.download = `${stem}-${style.replace(/[^A-Za-z0-9_+-]/g, "_")}.png`;
  const split = item.querySelector(".split");
  const clip = item.querySelector(".after-clip");
  split.addEventListener("input", () => { clip.style.clipPath = `inset(0 0 0 ${split.value}%)`; });
  $("results").prepend(item);
}

// ------------------------------------------------------------------ webcam

const webcam = {
  socket: null, stream: null, canvas: document.createElement("canvas"), times: [], busy: false,

  sendOptions() {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(options()));
    }
  },

  async start() {
    say("webcam-status", "");
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
    } catch (error) {
      say("webcam-status", `no camera: ${error.message}`, true);
      return;
    }
    const video = $("webcam-video");
    video.srcObject = this.stream;
    await video.play();
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    this.socket = new WebSocket(`${scheme}://${location.host}/v1/webcam`);
    this.socket.binaryType = "blob";
    this.socket.onopen = () => { this.sendOptions(); this.next(); };
    this.socket.onmessage = (event) => this.received(event);
    this.socket.onclose = () => this.stop();
    $("webcam-start").disabled = true;
    $("webcam-stop").disabled = false;
  },

  received(event) {
    if (typeof event.data === "string") {
      const message = JSON.parse(event.data);
      if (message.error) { say("webcam-status", message.error, true); this.busy = false; this.next(); }
      return;
    }
    const out = $("webcam-out");
    const previous = out.src;
    out.src = URL.createObjectURL(event.data);
    if (previous) URL.revokeObjectURL(previous);
    const now = performance.now();
    this.times.push(now);
    while (this.times.length && now - this.times[0] > 2000) this.times.shift();
    const fps = this.times.length > 1 ? (this.times.length - 1) / ((now - this.times[0]) / 1000) : 0;
    $("webcam-fps").textContent = `${fps.toFixed(1)} frames/s`;
    document.body.dataset.webcamFrames = String(Number(document.body.dataset.webcamFrames || 0) + 1);
    this.busy = false;
    this.next();
  },

  next() {  // one frame in flight: the camera's latest, as soon as the last one came back
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN || this.busy) return;
    const video = $("webcam-video");
    if (!video.videoWidth) { setTimeout(() => this.next(), 30); return; }
    this.canvas.width = video.videoWidth;
    this.canvas.height = video.videoHeight;
    this.canvas.getContext("2d").drawImage(video, 0, 0);
    this.busy = true;
    this.canvas.toBlob((blob) => {
      if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.send(blob);
      else this.busy = false;
    }, "image/jpeg", 0.85);
  },

  stop() {
    if (this.socket) { const s = this.socket; this.socket = null; s.close(); }
    if (this.stream) { this.stream.getTracks().forEach((t) => t.stop()); this.stream = null; }
    this.busy = false;
    $("webcam-start").disabled = false;
    $("webcam-stop").disabled = true;
  },
};

// ------------------------------------------------------------------ jobs: video and training

async function follow(job, progressId, statusId, onUpdate) {
  const bar = $(progressId);
  bar.hidden = false;
  for (;;) {
    const response = await fetch(`/v1/jobs/${job.id}`);
    if (!response.ok) { say(statusId, await failure(response), true); return null; }
    job = await response.json();
    bar.value = job.progress;
    onUpdate(job);
    if (["done", "failed", "cancelled"].includes(job.state)) return job;
    await new Promise((resolve) => setTimeout(resolve, 700));
  }
}

function setupVideo() {
  $("video-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData();
    form.append("video", $("video-file").files[0]);
    for (const [key, value] of Object.entries(options())) form.append(key, String(value));
    form.append("stabilize", String($("video-stabilize").checked));
    if ($("video-size").value) form.append("max_size", $("video-size").value);
    say("video-status", "uploading…");
    $("video-result").replaceChildren();
    const response = await fetch("/v1/videos", { method: "POST", body: form });
    if (!response.ok) { say("video-status", await failure(response), true); return; }
    const job = await follow(await response.json(), "video-progress", "video-status", (j) => {
      const fps = j.frames_per_second ? `, ${j.frames_per_second} frames/s` : "";
      say("video-status", `${j.state}: ${j.frames || 0} of ${j.frames_total || "?"} frames${fps}`);
    });
    if (!job) return;
    if (job.state !== "done") { say("video-status", job.message || job.state, true); return; }
    const video = document.createElement("video");
    video.controls = true;
    video.src = job.result;
    const link = document.createElement("a");
    link.href = job.result;
    link.download = "stylized.mp4";
    link.textContent = "Download the video";
    $("video-result").replaceChildren(video, document.createElement("br"), link);
    say("video-status", `done: ${job.frames} frames${job.audio ? ", audio kept" : ""}`);
  });
}

function setupTrain() {
  let current = null;
  $("train-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData();
    form.append("painting", $("train-painting").files[0]);
    form.append("name", $("train-name").value);
    if ($("train-minutes").value) form.append("minutes", $("train-minutes").value);
    say("train-status", "starting…");
    const response = await fetch("/v1/train", { method: "POST", body: form });
    if (!response.ok) { say("train-status", await failure(response), true); return; }
    current = await response.json();
    $("train-stop").disabled = false;
    let shownAt = 0;
    const job = await follow(current, "train-progress", "train-status", (j) => {
      const loss = j.loss != null ? `, loss ${Number(j.loss).toExponential(3)}` : "";
      const steps = j.steps ? ` of ${j.steps}` : "";
      say("train-status", `${j.state}: step ${j.step || 0}${steps}${loss}${j.message ? "; " + j.message : ""}`);
      if (j.step && Date.now() - shownAt > 3000) { shownAt = Date.now(); refreshTrainImages(j); }
    });
    $("train-stop").disabled = true;
    if (!job) return;
    refreshTrainImages(job);
    if (job.state === "done") {
      say("train-status", `done: style ${job.style} after ${job.step} steps`);
      await loadStyles(job.style);
    } else {
      say("train-status", job.message || job.state, true);
    }
  });
  $("train-stop").addEventListener("click", async () => {
    if (current) await fetch(`/v1/jobs/${current.id}`, { method: "DELETE" });
  });
}

function refreshTrainImages(job) {
  for (const [id, url] of [["train-preview", job.preview], ["train-loss", job.loss_plot]]) {
    const img = $(id);
    const probe = new Image();
    probe.onload = () => { img.src = probe.src; img.hidden = false; };
    probe.src = `${url}?t=${Date.now()}`;
  }
}

// ------------------------------------------------------------------ start

document.addEventListener("DOMContentLoaded", async () => {
  setupTabs();
  setupGalleryKeys();
  setupControls();
  setupPhotos();
  setupVideo();
  setupTrain();
  $("webcam-start").addEventListener("click", () => webcam.start());
  $("webcam-stop").addEventListener("click", () => webcam.stop());
  await loadStyles();
  document.body.dataset.ready = "true";
});

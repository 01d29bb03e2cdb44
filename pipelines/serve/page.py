"""The search page served at `/`: a box, then the top-k videos as thumbnails with caption and score. The
query comes from the page's own address (`/?q=...&k=...`), so a link or a headless browser shows a search."""

PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>TempMe video search</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 68rem; padding: 0 1rem; color: #222; }
  form { display: flex; gap: .5rem; margin-bottom: .5rem; }
  input[name=q] { flex: 1; font-size: 1.1rem; padding: .5rem .7rem; }
  input[name=k] { width: 4rem; font-size: 1.1rem; }
  button { font-size: 1.1rem; padding: .5rem 1rem; }
  #status { color: #666; min-height: 1.4rem; }
  #hits { display: grid; grid-template-columns: repeat(auto-fill, minmax(13rem, 1fr)); gap: 1rem;
          list-style: none; padding: 0; }
  .hit { border: 1px solid #ddd; border-radius: .4rem; overflow: hidden; }
  .hit img { width: 100%; aspect-ratio: 1; object-fit: cover; background: #eee; display: block; }
  .hit div { padding: .4rem .6rem; font-size: .9rem; }
  .score { color: #666; font-variant-numeric: tabular-nums; }
  .moment { font-variant-numeric: tabular-nums; }
  .error { color: #b00020; }
</style>
</head>
<body>
<h1>TempMe video search</h1>
<form id="search" action="" method="get">
  <input name="q" placeholder="a man is cooking" autofocus>
  <input name="k" type="number" min="1" max="100" value="10" title="videos to show">
  <button>Search</button>
</form>
<p id="status"></p>
<ol id="hits"></ol>
<script>
const form = document.getElementById("search"), status = document.getElementById("status"),
      list = document.getElementById("hits");
function show(answer) {
  status.textContent = `${answer.hits.length} videos for "${answer.query}" — index version ` +
    `${answer.index_version}, model ${answer.model.name} v${answer.model.version}, ${answer.took_ms} ms`;
  list.replaceChildren(...answer.hits.map((hit, i) => {
    const item = document.createElement("li");
    item.className = "hit";
    item.dataset.videoId = hit.video_id;
    item.dataset.rank = i + 1;
    if (hit.thumbnail) {
      const img = document.createElement("img");
      img.src = hit.thumbnail;
      img.alt = hit.caption || hit.video_id;
      item.append(img);
    }
    const text = document.createElement("div");
    const id = document.createElement("strong");
    id.textContent = hit.video_id;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = " " + hit.score.toFixed(3);
    const caption = document.createElement("p");
    caption.textContent = hit.caption;
    text.append(id, score);
    if (hit.start !== undefined) {
      const when = document.createElement(playable(hit.source) ? "a" : "span");
      when.className = "moment";
      when.textContent = ` ${clock(hit.start)}–${clock(hit.end)}`;
      if (playable(hit.source)) when.href = `${hit.source}#t=${Math.floor(hit.start)}`;
      text.append(when);
    }
    text.append(caption);
    item.append(text);
    return item;
  }));
}
function clock(seconds) {
  const s = Math.floor(seconds), h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60;
  const two = (n) => String(n).padStart(2, "0");
  return h ? `${h}:${two(m)}:${two(s % 60)}` : `${m}:${two(s % 60)}`;
}
function playable(source) {   // a browser can open it (and seek with #t=)
  return typeof source === "string" && /^https?:\/\//.test(source);
}
async function search(q, k) {
  status.className = "";
  status.textContent = "searching…";
  const reply = await fetch(`search?q=${encodeURIComponent(q)}&k=${encodeURIComponent(k)}`);
  const answer = await reply.json();
  if (!reply.ok) {
    status.className = "error";
    status.textContent = answer.error;
    list.replaceChildren();
    return;
  }
  show(answer);
}
const params = new URLSearchParams(location.search);
if (params.get("q")) {
  form.q.value = params.get("q");
  form.k.value = params.get("k") || 10;
  search(form.q.value, form.k.value);
}
</script>
</body>
</html>
"""

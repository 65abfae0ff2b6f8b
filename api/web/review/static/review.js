// Briefing steward pages: keyboard shortcuts on the pair page (y = Match, n = Not a match, u = Unsure).
// A shortcut never fires while typing in a field or with a modifier key held; "u" moves to the note, and
// submits Unsure once the note has text.
(function () {
  "use strict";
  function submit(id) {
    var form = document.getElementById(id);
    if (!form) { return false; }
    if (typeof form.requestSubmit === "function") { form.requestSubmit(); } else { form.submit(); }
    return true;
  }
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || event.isComposing || event.repeat) { return; }
    var target = event.target;
    if (target && target.closest && target.closest("input, textarea, select, [contenteditable]")) { return; }
    if (!document.querySelector("[data-shortcuts]")) { return; }
    var key = (event.key || "").toLowerCase();
    var done = false;
    if (key === "y") {
      done = submit("decide-match");
    } else if (key === "n") {
      done = submit("decide-not_a_match");
    } else if (key === "u") {
      var note = document.getElementById("note");
      if (note && note.value.trim() !== "") { done = submit("decide-unsure"); }
      else if (note) { note.focus(); done = true; }
    }
    if (done) { event.preventDefault(); }
  });
})();

// Refreshes the page every 30 seconds (unless the page says data-refresh="off"), unless the
// operator has started filling in a form or is in one of its fields: a half-filled form is
// never lost. Asks before irreversible actions (forms with data-confirm). Pages work without
// this script (the ones without text fields carry a <noscript> refresh instead).
(function () {
  var dirty = false;
  // Irreversible actions ask first (without JavaScript they run at once).
  document.addEventListener('submit', function (event) {
    var question = event.target.getAttribute('data-confirm');
    if (question && !window.confirm(question)) { event.preventDefault(); }
  });
  document.addEventListener('input', function () { dirty = true; });
  if (document.body.getAttribute('data-refresh') === 'off') { return; }
  setInterval(function () {
    var active = document.activeElement;
    var inForm = active && active.form && active.tagName !== 'BUTTON';
    if (!dirty && !inForm) { window.location.reload(); }
  }, 30000);
})();

window.addEventListener("load", function () {
  var bad = [];
  document.querySelectorAll("img").forEach(function (img) {
    if (!img.complete || img.naturalWidth === 0) { bad.push(img.getAttribute("src")); }
  });
  document.body.setAttribute("data-images", bad.length ? "broken" : "ok");
  if (bad.length) {
    var box = document.getElementById("broken");
    box.hidden = false;
    box.textContent += " " + bad.join(", ");
  }
});

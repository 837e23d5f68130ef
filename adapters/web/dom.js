// Small helpers for drawing: elements from a tag and attributes, text and progress bars
// changed only when they differ, and the page's error line.

/// `h("p", {class: "x"}, "text", child)`: an element with attributes and children.
export function h(tag, attributes, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) {
    if (value === false || value == null) continue;
    element.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child == null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/// Sets text only when it changed (keeps selections and screen readers calm).
export function setText(element, text) {
  if (element.textContent !== text) element.textContent = text;
}

/// Points a progress bar (role=progressbar) at a percent.
export function setBar(bar, percent) {
  const value = String(percent);
  if (bar.getAttribute("aria-valuenow") !== value) {
    bar.setAttribute("aria-valuenow", value);
    bar.setAttribute("aria-valuetext", `${percent}%`);
  }
  const fill = bar.querySelector(".bar-fill");
  if (fill) fill.style.width = `${percent}%`;
}

export function showError(text) {
  const line = document.getElementById("error");
  if (!line) return;
  line.hidden = !text;
  setText(line, text || "");
}

import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import "@xyflow/react/dist/style.css";
import "./styles.css";
import { App } from "./App";
import { takeSigninCode } from "./session";

// Read before the first render: the code leaves the address bar at once.
const signinCode = takeSigninCode();
const root = document.getElementById("root");
if (root) {
  createRoot(root).render(
    <StrictMode>
      <App signinCode={signinCode} />
    </StrictMode>,
  );
}

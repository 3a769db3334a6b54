import { createContext } from "react";

/** The catalog (schemas, role) and the credential, for widgets deep inside forms. */
export const CatalogContext = createContext({ catalog: null, credential: null });

// Shared by the node scripts of the end-to-end tests.

// The message of the error `action` throws, or null when it succeeds.
export const failure = async (action) => {
  try {
    await action();
    return null;
  } catch (error) {
    return String(error.message ?? error);
  }
};
